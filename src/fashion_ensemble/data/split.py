"""The two protocols' splits of a data source, and their facts (sizes, class counts, fingerprint, duplicates).

Images stay uint8 (N, S, S) — Fashion-MNIST's (N, 28, 28) — until a model's first layer normalises them; labels are
int64 (N,), and `one_hot` builds the paper's one-hot targets from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from fashion_ensemble.config import FASHION_MNIST, PROTOCOLS, DataConfig
from fashion_ensemble.config.classes import CLASSES
from fashion_ensemble.data.idx import resolve_data_dir
from fashion_ensemble.data.imagefolder import MIN_PER_CLASS
from fashion_ensemble.data.sources import load_source, places
from fashion_ensemble.errors import UserError


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
    origins: dict[str, np.ndarray] | None = None  # part → (N,) object array: where each image came from, a file
    # relative to the source folder ("test/Bag/x.png") or an IDX file and place ("t10k-images-idx3-ubyte.gz[12]")

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


def make_split(cfg: DataConfig, data_dir=None, raw=None, classes: tuple[str, ...] = CLASSES,
               progress: bool = True, left_out: dict | None = None, origins: dict | None = None) -> Split:
    """Build the protocol's split from the configured source (or from `raw`, as returned by `load_raw`, with its
    `classes`, what reading it `left_out` and its images' `origins`, as `load_source` returns them): "paper" pools
    every part and splits it 80/10/10 (as does a source that gives no split: "all"); "standard" keeps the source's
    test part, and its val part if it has one, else holds val_fraction of train out. `train_subset` keeps that many
    training images, drawn at random (stratified) where the training part comes in the source's order (a folder's
    train/ with its own val/)."""
    if raw is None:
        raw, classes, left_out, origins = load_source(cfg, data_dir, progress)
    if origins is None:  # raw parts given without them: each image's part and place
        origins = places(raw)
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
        # The origins go through the same splits as the images: scikit-learn draws one permutation for all arrays.
        x_all = np.concatenate([raw[k][0] for k in raw])
        y_all = np.concatenate([raw[k][1] for k in raw])
        o_all = np.concatenate([origins[k] for k in raw])
        x_tr, x_rest, y_tr, y_rest, o_tr, o_rest = train_test_split(
            x_all, y_all, o_all, test_size=0.2, stratify=y_all, random_state=cfg.split_seed
        )
        x_va, x_te, y_va, y_te, o_va, o_te = train_test_split(
            x_rest, y_rest, o_rest, test_size=0.5, stratify=y_rest, random_state=cfg.split_seed
        )
    elif "val" in raw:  # "standard" with the source's own validation part
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = raw["train"], raw["val"], raw["test"]
        o_tr, o_va, o_te = origins["train"], origins["val"], origins["test"]
        if cfg.train_subset is not None and cfg.train_subset < len(y_tr):  # else the first classes' files alone
            order = np.random.default_rng(cfg.split_seed).permutation(len(y_tr))
            x_tr, y_tr, o_tr = x_tr[order], y_tr[order], o_tr[order]
    else:  # "standard" (DataConfig admits no other)
        (x_tr, y_tr), (x_te, y_te) = raw["train"], raw["test"]
        o_te = origins["test"]
        x_tr, x_va, y_tr, y_va, o_tr, o_va = train_test_split(
            x_tr, y_tr, origins["train"], test_size=cfg.val_fraction, stratify=y_tr, random_state=cfg.split_seed
        )
    if cfg.train_subset is not None:
        x_tr, y_tr, o_tr = x_tr[: cfg.train_subset], y_tr[: cfg.train_subset], o_tr[: cfg.train_subset]
    split = Split(cfg.protocol, (x_tr, y_tr), (x_va, y_va), (x_te, y_te), tuple(classes), dict(left_out or {}),
                  {"train": o_tr, "val": o_va, "test": o_te})
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
    counts, checksums), each protocol's split facts and its near-duplicates across parts (duplicates.py), and the
    classes rarer than RARE_CLASS of the largest: {"source", "classes", "left_out", "rare_classes", "protocols":
    {protocol: facts + "near_duplicates"}}."""
    from fashion_ensemble.data.duplicates import cross_split_near_copies, phashes

    cfg = cfg or DataConfig()
    raw, classes, left_out, origins = load_source(cfg, data_dir)
    where = str(resolve_data_dir(data_dir)) if cfg.source == FASHION_MNIST else cfg.source
    by_origin = {o: h for k in raw for o, h in zip(origins[k], phashes(raw[k][0]))}  # each image hashed once
    protocols = {}
    for p in PROTOCOLS:
        split = make_split(dataclasses.replace(cfg, protocol=p), raw=raw, classes=classes, left_out=left_out,
                           origins=origins)
        parts = {"train": split.train[0], "val": split.val[0], "test": split.test[0]}
        hashes = {k: np.array([by_origin[o] for o in split.origins[k]], dtype=np.uint64) for k in parts}
        protocols[p] = {**split.facts(), "near_duplicates": cross_split_near_copies(parts, hashes)}
    return {"source": where, "classes": list(classes), "left_out": left_out,
            "rare_classes": rare_classes(np.concatenate([y for _, y in raw.values()]), classes),
            "protocols": protocols}


RARE_CLASS = 1 / 10  # a class with fewer than this share of the largest class's images is said to be rare


def rare_classes(labels: np.ndarray, classes) -> dict[str, int]:
    """{class: images} of the classes with fewer than RARE_CLASS of the largest class's images, rarest first."""
    counts = np.bincount(labels, minlength=len(classes))
    rare = [k for k in np.argsort(counts, kind="stable") if counts[k] < RARE_CLASS * counts.max()]
    return {classes[k]: int(counts[k]) for k in rare}
