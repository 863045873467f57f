"""Shared fixtures: tiny synthetic IDX files written in the test itself, and the real data set when installed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fashion_ensemble.data import DEFAULT_DATA_DIR, FILES

REAL_DATA = Path(DEFAULT_DATA_DIR)


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as IDX: magic 0x0000_08_<ndim>, then the big-endian dims, then the data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    path.write_bytes(gzip.compress(idx_bytes(array)))
    return path


def synthetic_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Class k: a bright horizontal bar at row 2k+4 over dim noise, so that any model can learn it in an epoch."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 4 : 2 * k + 6, 4:24] = 220
    return images


def write_dataset(folder: Path, n_train: int = 400, n_test: int = 100, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        rng.shuffle(labels)
        images_file, labels_file = FILES[part]
        write_idx(folder / images_file, synthetic_images(labels, seed + len(part)))
        write_idx(folder / labels_file, labels)
    return folder


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
    """A complete run folder trained in seconds on synthetic data (the smoke profile, checksums off)."""
    import fashion_ensemble as fe
    from fashion_ensemble.config import DataConfig, profile

    root = tmp_path_factory.mktemp("tiny_run")
    cfg = profile("smoke").replace(data=DataConfig(train_subset=None, verify_checksums=False))
    return fe.run_study(cfg, root / "run", data_dir=write_dataset(root / "data"), device="cpu", progress=False)


def png_bytes(array: np.ndarray, **save) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    (array if hasattr(array, "save") else Image.fromarray(array)).save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()
