"""Shared fixtures: tiny synthetic IDX files written in the test itself, and the real data set when installed.
Helper functions live in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashion_ensemble.data.idx import DEFAULT_DATA_DIR, FILES
from helpers import smoke_config, write_dataset

REAL_DATA = Path(DEFAULT_DATA_DIR)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / FILES["test"][1]).is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make test installs it)")
    return REAL_DATA


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A complete run folder trained in seconds on synthetic data (the smoke config, checksums off)."""
    import fashion_ensemble as fe

    root = tmp_path_factory.mktemp("tiny_run")
    return fe.train(smoke_config(), root / "run", data_dir=write_dataset(root / "data"), device="cpu",
                        progress=False)


HOSTILE_CLASSES = ("$x^$", "<img src=x onerror=window.pwned=1>", "a|b")  # markup, a formula, a table cell's end


@pytest.fixture(scope="session")
def hostile_run(tmp_path_factory) -> Path:
    """A complete run folder of an image folder whose class names are hostile (HOSTILE_CLASSES), in seconds."""
    import dataclasses

    import fashion_ensemble as fe
    from helpers import image_folder

    root = tmp_path_factory.mktemp("hostile_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        folder = image_folder(root / "photos", classes=HOSTILE_CLASSES, per_class=30)
        cfg = smoke_config()
        cfg = cfg.replace(data=dataclasses.replace(cfg.data, source=str(folder), pipeline="pad"))
        return fe.train(cfg, root / "run", device="cpu", progress=False)
