"""Shared fixtures: tiny synthetic IDX files written in the test itself, and the real data set when installed.
Helper functions live in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashion_ensemble.data import DEFAULT_DATA_DIR, FILES
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
    return fe.run_study(smoke_config(), root / "run", data_dir=write_dataset(root / "data"), device="cpu",
                        progress=False)
