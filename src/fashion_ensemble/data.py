"""Data sets: reading, checking, the two protocols' splits, split facts.

`DataConfig.source` says which: "fashion-mnist" (the official IDX files, checked against their checksums;
`--data-dir` or $FASHION_MNIST_DIR says where they are), or the path of a folder whose layout says what it holds:
- any IDX data set in the same four-file layout (MNIST, KMNIST, EMNIST letters, ...): the same checks but no
  checksums, class names from an optional `classes.txt` beside the files (one per line), else "0".."K-1";
- an image folder, one sub-folder per class, optionally under train/, val/, test/ (imagefolder.py).

Images stay uint8 (N, 28, 28) until a model's first layer normalises them; labels are int64 (N,), and `one_hot`
builds the paper's one-hot targets from them.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from .classes import CLASSES
from .config import FASHION_MNIST, PROTOCOLS, DataConfig
from .errors import UserError
from .imagefolder import MIN_PER_CLASS, is_image_folder, load_image_folder

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


@dataclass
class Split:
    """Train/validation/test parts of one protocol. Images uint8 (N, S, S) greyscale — Fashion-MNIST's (N, 28, 28) —
    or (N, S, S, 3) RGB; labels int64 (N,) indexing `classes`."""

    protocol: str
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    classes: tuple[str, ...] = CLASSES
    source: dict = dataclasses.field(default_factory=dict)  # what reading left out: {"skipped_bad_images": 3, ...}

    @property
    def mean_std(self) -> tuple[float, float]:
        """Pixel mean and std in [0, 1] units, from the training part only (no peeking at val/test)."""
        x = self.train[0].astype(np.float64) / 255.0
        return float(x.mean()), float(x.std())

    def facts(self) -> dict:
        """Sizes, class balance per part, the images of a later part that are exact copies of an earlier part's
        (train/test 20: twenty test images have a copy in train), what reading the source left out, and each
        part's fingerprint (`fingerprint`)."""
        parts = {"train": self.train, "val": self.val, "test": self.test}
        facts = {
            "protocol": self.protocol,
            "sizes": {k: len(v[1]) for k, v in parts.items()},
            "class_counts": {k: np.bincount(v[1], minlength=len(self.classes)).tolist() for k, v in parts.items()},
            "cross_split_duplicates": {},
        }
        digests = {k: _image_digests(v[0]) for k, v in parts.items()}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            earlier = set(digests[a])
            facts["cross_split_duplicates"][f"{a}/{b}"] = sum(d in earlier for d in digests[b])
        mean, std = self.mean_std
        facts["normalisation"] = {"mean": mean, "std": std}
        if self.source:
            facts["source"] = dict(self.source)
        facts["fingerprint"] = self.fingerprint()
        return facts

    def fingerprint(self) -> dict[str, str]:
        """Each part's digest (SHA-256 of its images' shape and pixels and its labels, 32 hex digits): a run folder
        records it, so that scoring it on data that changed since is refused (`compare`)."""
        out = {}
        for name, (images, labels) in (("train", self.train), ("val", self.val), ("test", self.test)):
            h = hashlib.sha256(repr(tuple(images.shape)).encode())
            h.update(np.ascontiguousarray(images).tobytes())
            h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
            out[name] = h.hexdigest()[:32]
        return out

    def compare(self, recorded: dict) -> list[str]:
        """How this split differs from the one a run recorded (its metrics.json "split" facts), part by part, in
        words: [] when it is the same. Facts written before fingerprints existed compare by sizes and class counts."""
        differences = []
        fingerprint = self.fingerprint()  # not `facts`: its duplicate search hashes every image once more
        for part, (_, labels) in (("train", self.train), ("val", self.val), ("test", self.test)):
            was_n, now_n = recorded["sizes"][part], len(labels)
            if was_n != now_n:
                now_counts = np.bincount(labels, minlength=len(self.classes)).tolist()
                counts = [f"{c} {a} → {b}" for c, a, b in zip(self.classes, recorded["class_counts"][part],
                                                               now_counts) if a != b]
                differences.append(f"{part}: {was_n:,} images then, {now_n:,} now ({', '.join(counts[:4])}"
                                   f"{', ...' if len(counts) > 4 else ''})")
            elif "fingerprint" in recorded and recorded["fingerprint"][part] != fingerprint[part]:
                differences.append(f"{part}: as many images ({now_n:,}), but other images or labels")
        return differences


def class_changes(was, now) -> str | None:
    """How a data set's class names changed since a run was trained on it, in words (None: they did not)."""
    if list(was) == list(now):
        return None
    added, gone = [c for c in now if c not in was], [c for c in was if c not in now]
    return (f"the classes differ: the run has {len(was)}, the data now {len(now)}"
            + (f"; added {added[:5]}" if added else "") + (f"; gone {gone[:5]}" if gone else "")
            + ("; the same names in another order" if not added and not gone else ""))


def _image_digests(images: np.ndarray) -> list[bytes]:
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


def load_source(cfg: DataConfig, data_dir=None, progress: bool = True
                ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...], dict]:
    """The parts of `cfg.source` as it gives them ("train" and "test", also "val" from an image folder that has one,
    or "all" from one without split folders; as `load_raw` returns them), its class names, and what reading left
    out ({"skipped_bad_images": n, "skipped_hidden": n}, only the counts above 0; {} for IDX files)."""
    idx = cfg.source == FASHION_MNIST or (Path(cfg.source) / FILES["train"][0]).is_file()
    if idx and cfg.channels != 1:
        raise UserError(f"data source {cfg.source}: IDX files hold greyscale images; leave data.channels at 1 (got "
                        f"{cfg.channels})")
    if cfg.source == FASHION_MNIST:
        if cfg.image_size != 28:
            raise UserError(f"Fashion-MNIST's images are 28×28; leave data.image_size at 28 (got {cfg.image_size})")
        return load_raw(data_dir, verify_checksums=cfg.verify_checksums), CLASSES, {}
    folder = Path(cfg.source)
    if not folder.is_dir():
        raise UserError(f"data source {cfg.source!r} is neither {FASHION_MNIST!r} nor a folder")
    if idx:
        raw = load_raw(folder, verify_checksums=False, num_classes=None, size=cfg.image_size)
        return raw, idx_classes(folder, raw), {}
    if is_image_folder(folder):
        raw, classes, facts = load_image_folder(folder, pipeline=cfg.pipeline, skip_bad=cfg.skip_bad_images,
                                                progress=progress, size=cfg.image_size, channels=cfg.channels)
        left_out = {k: facts[k] for k in ("skipped_bad_images", "skipped_hidden") if facts[k]}
        return raw, classes, left_out
    raise UserError(f"{folder}: neither the four IDX files ({', '.join(f for pair in FILES.values() for f in pair)}) "
                    "nor class sub-folders of images")


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


def make_split(cfg: DataConfig, data_dir=None, raw=None, classes: tuple[str, ...] = CLASSES,
               progress: bool = True, left_out: dict | None = None) -> Split:
    """Build the protocol's split from the configured source (or from `raw`, as returned by `load_raw`, with its
    `classes` and what reading it `left_out`): "paper" pools every part and splits it 80/10/10 (as does a source that
    gives no split: "all"); "standard" keeps the source's test part, and its val part if it has one, else holds
    val_fraction of train out. `train_subset` keeps that many training images, drawn at random (stratified) where
    the training part comes in the source's order (a folder's train/ with its own val/)."""
    if raw is None:
        raw, classes, left_out = load_source(cfg, data_dir, progress)
    pooled = cfg.protocol == "paper" or "all" in raw
    if cfg.source != FASHION_MNIST:  # before splitting: a stratified split needs a few of each class
        if pooled:
            pool = np.concatenate([y for _, y in raw.values()])
            _check_counts({"all": pool}, classes, math.ceil(MIN_PER_CLASS / 0.1))  # its val and test are 10% each
        else:
            _check_counts({k: y for k, (_, y) in raw.items() if k != "train"}, classes, MIN_PER_CLASS)
            needed = MIN_PER_CLASS if "val" in raw else math.ceil(MIN_PER_CLASS / cfg.val_fraction)
            _check_counts({"train": raw["train"][1]}, classes, needed)
    if pooled:
        x_all = np.concatenate([raw[k][0] for k in raw])
        y_all = np.concatenate([raw[k][1] for k in raw])
        x_tr, x_rest, y_tr, y_rest = train_test_split(
            x_all, y_all, test_size=0.2, stratify=y_all, random_state=cfg.split_seed
        )
        x_va, x_te, y_va, y_te = train_test_split(
            x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=cfg.split_seed
        )
    elif "val" in raw:  # "standard" with the source's own validation part
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = raw["train"], raw["val"], raw["test"]
        if cfg.train_subset is not None and cfg.train_subset < len(y_tr):  # else the first classes' files alone
            order = np.random.default_rng(cfg.split_seed).permutation(len(y_tr))
            x_tr, y_tr = x_tr[order], y_tr[order]
    else:  # "standard" (DataConfig admits no other)
        (x_tr, y_tr), (x_te, y_te) = raw["train"], raw["test"]
        x_tr, x_va, y_tr, y_va = train_test_split(
            x_tr, y_tr, test_size=cfg.val_fraction, stratify=y_tr, random_state=cfg.split_seed
        )
    if cfg.train_subset is not None:
        x_tr, y_tr = x_tr[: cfg.train_subset], y_tr[: cfg.train_subset]
    split = Split(cfg.protocol, (x_tr, y_tr), (x_va, y_va), (x_te, y_te), tuple(classes), dict(left_out or {}))
    if cfg.source != FASHION_MNIST:
        _check_counts({"train": y_tr, "val": y_va, "test": y_te}, classes, MIN_PER_CLASS)
    return split


def _check_counts(parts: dict[str, np.ndarray], classes, needed: int) -> None:
    """Every class needs `needed` images in each part (labels given): fewer cannot be split, learnt or scored."""
    for part, labels in parts.items():
        counts = np.bincount(labels, minlength=len(classes))
        thin = [f"{classes[k]} ({n})" for k, n in enumerate(counts) if n < needed]
        if thin:
            raise UserError(f"the {part} images hold fewer than {needed} of: {', '.join(thin[:5])}"
                            f"{' ...' if len(thin) > 5 else ''} (each of train, val and test needs {MIN_PER_CLASS} of "
                            "every class); add images, or merge or drop those classes")


def one_hot(labels, num_classes: int = len(CLASSES), smoothing: float = 0.0):
    """One-hot targets (N, C) as the paper uses, optionally label-smoothed: 1-s on the class, s/C spread over all."""
    import torch

    labels = torch.as_tensor(labels)
    targets = torch.nn.functional.one_hot(labels, num_classes).float()
    return targets * (1.0 - smoothing) + smoothing / num_classes


def part(cfg: DataConfig, name: str, data_dir=None, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One part ("train", "val" or "test") of a data configuration's split, as a run with it sees it: the test
    images that `serve`'s examples and `loadtest` send, the training images that `bench` times. Checksums are not
    verified: these tools measure or show, they train nothing."""
    return getattr(make_split(dataclasses.replace(cfg, verify_checksums=False), data_dir, progress=progress), name)


def describe(data_dir=None, cfg: DataConfig | None = None) -> dict:
    """`fashion-ensemble data check`: the source read with every check (for Fashion-MNIST: magic numbers, shapes,
    counts, checksums), and each protocol's split facts: {"source", "classes", "protocols": {protocol: facts}}."""
    cfg = cfg or DataConfig()
    raw, classes, left_out = load_source(cfg, data_dir)
    where = str(resolve_data_dir(data_dir)) if cfg.source == FASHION_MNIST else cfg.source
    return {"source": where, "classes": list(classes), "left_out": left_out,
            "protocols": {p: make_split(dataclasses.replace(cfg, protocol=p), raw=raw, classes=classes,
                                        left_out=left_out).facts()
                          for p in PROTOCOLS}}
