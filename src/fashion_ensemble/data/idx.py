"""Fashion-MNIST's official IDX files and any data set in their four-file layout (MNIST, KMNIST, EMNIST letters):
reading with every check (magic numbers, shapes, counts, and for Fashion-MNIST the official checksums), and the
class names of another IDX data set (`classes.txt` beside its files)."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from fashion_ensemble.config.classes import CLASSES
from fashion_ensemble.errors import UserError

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
DATA_DIR_ENV = "FASHION_MNIST_DIR"
INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist`, or pass --data-dir / set FASHION_MNIST_DIR"

FILES = {  # part → (images file, labels file)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
OFFICIAL_COUNTS = {"train": 60_000, "test": 10_000}
# SHA-256 of each file's decompressed bytes (the .gz wrapper differs between mirrors; the content must not).
OFFICIAL_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # uint8 data; 3 dims (N, rows, cols) or 1 dim (N,)
MAX_IDX_BYTES = 2**31  # 2 GiB of pixels: 40× Fashion-MNIST's train images, above EMNIST's largest split


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The explicit folder, else $FASHION_MNIST_DIR, else Debian's install location."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def read_idx(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Read one gzip-compressed IDX file. Returns (array, sha256 of the decompressed bytes).

    Images come back as uint8 (N, rows, cols), labels as uint8 (N,). Every way the file can be wrong gets a UserError.
    The file is decompressed as a stream and never past the size its header declares (at most MAX_IDX_BYTES), so a
    gzip bomb costs no more memory than an honest file of the size it claims."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found; {INSTALL_HINT}")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty (0 bytes); re-install or re-download it")
    try:
        with gzip.open(path, "rb") as f:
            header = f.read(8)
            if len(header) < 8:
                raise UserError(f"{path}: {len(header)} bytes is too short for an IDX header (8+ bytes)")
            magic, count = struct.unpack(">II", header)
            if magic == IMAGES_MAGIC:
                dims = f.read(8)
                if len(dims) < 8:
                    raise UserError(f"{path}: image header truncated ({8 + len(dims)} bytes, need 16)")
                header += dims
                shape = (count, *struct.unpack(">II", dims))
            elif magic == LABELS_MAGIC:
                shape = (count,)
            else:
                raise UserError(
                    f"{path}: magic number 0x{magic:08x} is neither IDX uint8 images (0x{IMAGES_MAGIC:08x}) "
                    f"nor labels (0x{LABELS_MAGIC:08x})"
                )
            size = math.prod(shape)  # Python integers: no overflow, whatever the header says
            if size > MAX_IDX_BYTES:
                raise UserError(f"{path}: the header declares {shape} = {size:,} bytes, more than the "
                                f"{MAX_IDX_BYTES:,} this reader accepts")
            data = f.read(size)
            extra = len(f.read(1))
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: not a readable gzip file ({e}); re-install or re-download it") from None
    if len(data) != size or extra:
        raise UserError(
            f"{path}: header says {shape} ({len(header) + size} bytes) but the file holds "
            f"{len(header) + len(data)}{'+' if extra else ''} bytes: truncated or padded"
        )
    array = np.frombuffer(data, dtype=np.uint8).reshape(shape)
    return array, hashlib.sha256(header + data).hexdigest()


def load_raw(data_dir=None, *, verify_checksums: bool = True, parts: tuple[str, ...] = ("train", "test"),
             num_classes: int | None = len(CLASSES), size: int = 28) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The official parts: {"train": (images uint8 (60000, 28, 28), labels int64), "test": (... 10000 ...)}, or only
    those named in `parts`; labels must be below `num_classes` (None: any, as another data set's); images must be
    `size`×`size` greyscale."""
    folder = resolve_data_dir(data_dir)
    if not folder.is_dir():
        raise UserError(f"data folder {folder} does not exist; {INSTALL_HINT}")
    loaded = {}
    for part in parts:
        images_file, labels_file = FILES[part]
        images, images_sha = read_idx(folder / images_file)
        labels, labels_sha = read_idx(folder / labels_file)
        if images.ndim != 3 or images.shape[1:] != (size, size):
            hint = (f": train with --image-size {images.shape[1]}" if images.ndim == 3
                    and images.shape[1] == images.shape[2] else "")
            raise UserError(f"{folder / images_file}: expected {size}×{size} greyscale images (N, {size}, {size}), got "
                            f"shape {images.shape}{hint}")
        if labels.ndim != 1:
            raise UserError(f"{folder / labels_file}: expected a labels file (1 dimension), got shape {labels.shape}")
        if len(images) != len(labels):
            raise UserError(
                f"{folder}: {images_file} holds {len(images)} images but {labels_file} holds {len(labels)} labels"
            )
        if num_classes is not None and labels.max(initial=0) >= num_classes:
            raise UserError(f"{folder / labels_file}: label {labels.max()} out of range 0..{num_classes - 1}")
        if verify_checksums:
            if len(images) != OFFICIAL_COUNTS[part]:
                raise UserError(
                    f"{folder}: {part} has {len(images)} images, the official release has {OFFICIAL_COUNTS[part]}"
                )
            for name, sha in ((images_file, images_sha), (labels_file, labels_sha)):
                if sha != OFFICIAL_SHA256[name]:
                    raise UserError(f"{folder / name}: content checksum {sha[:12]}… differs from the official release")
        loaded[part] = (images, labels.astype(np.int64))
    return loaded


def idx_classes(folder: Path, raw: dict) -> tuple[str, ...]:
    """The class names of an IDX data set: `classes.txt` beside its files (one name per line), else "0".."K-1"
    for labels 0..K-1; every label must name a class, and there must be two classes or more."""
    top = max(int(labels.max(initial=0)) for _, labels in raw.values())
    names_file = folder / "classes.txt"
    if names_file.is_file():
        try:
            names = tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{names_file}: unreadable ({e}); write one class name per line, as UTF-8") from None
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise UserError(f"{names_file}: class names must differ, got {twice} more than once")
        if top >= len(names):
            raise UserError(f"{folder}: label {top} has no name in {names_file} ({len(names)} names for labels 0.."
                            f"{len(names) - 1}); add the missing names")
    else:
        names = tuple(str(k) for k in range(top + 1))
    if len(names) < 2:
        raise UserError(f"{folder}: a classifier needs two classes or more; the labels hold {len(names)}")
    return names
