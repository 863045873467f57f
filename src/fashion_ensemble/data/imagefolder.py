"""An image folder as a data set: one sub-folder per class (torchvision's `ImageFolder`, Keras'
`image_dataset_from_directory`), optionally under top-level `train/`, `val/` and `test/` folders.

    photos/coat/0001.jpg, photos/shirt/a.png, ...              all images; the study splits them 80/10/10
    photos/train/coat/..., photos/test/coat/... [, val/...]    the splits as given (val: held out of train if absent)

Class names are the sub-folders' names, sorted; names that are not one line of text, or that differ only by case or
Unicode normalisation (`Coat`/`coat`), are refused. Hidden entries — any file or folder whose name starts with "."
(`.DS_Store`, macOS's `._x.png`, `.ipynb_checkpoints/`) — are skipped and counted, never read.

Every image goes through the pipeline prediction uses: `preprocess` (a product shot on a plain background → 28×28,
garment bright on black), or with `pipeline="pad"` a plain resize of the longest side to 28 and a centred pad on
black (for images that are already model inputs, such as Fashion-MNIST's own) — at the data's `size` and `channels`
(1: greyscale (N, S, S); 3: RGB (N, S, S, 3)). Decoding runs on every core with a progress bar, and its result is
cached (keyed by the files' names, sizes and modification times, the pipeline and the geometry) under
$XDG_CACHE_HOME/fashion-ensemble, so a second run starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from fashion_ensemble.config import PIPELINES
from fashion_ensemble.errors import Notice, UserError
from fashion_ensemble.model.preprocess import IMAGE_SUFFIXES, SIZE, ImageError, hidden, image_files, preprocess

SPLITS = ("train", "val", "test")


MIN_PER_CLASS = 3  # images of each class in each split: fewer cannot be scored (or learnt) meaningfully
CACHE_VERSION = 1  # bump when decoding changes, so that old caches are not used


def is_image_folder(folder: Path) -> bool:
    """A folder of class sub-folders (or of split folders holding them)."""
    return folder.is_dir() and any(p.is_dir() and not hidden(p) for p in folder.iterdir())


def check_class_names(names: list[str], where: Path) -> None:
    """Class names become labels in every answer, report and page: each must be one line of text, and no two may
    differ only by case or Unicode normalisation (they would look the same, and clash on case-insensitive disks)."""
    for name in names:
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name) or name != name.strip():
            raise UserError(f"{where}: class folder {name!r} has a control character, line break or surrounding "
                            "space in its name; rename it to plain text")
    seen: dict[str, str] = {}
    for name in names:
        key = unicodedata.normalize("NFC", name).casefold()
        if key in seen:
            raise UserError(f"{where}: class folders {seen[key]!r} and {name!r} differ only by case or Unicode "
                            "normalisation; merge them or rename one")
        seen[key] = name


def load_image_folder(folder: Path, *, pipeline: str = "preprocess", skip_bad: bool = False, progress: bool = True,
                      size: int = SIZE, channels: int = 1
                      ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...], dict]:
    """({split or "all": (images uint8 (N, S, S) or (N, S, S, 3), labels int64 (N,))}, class names, facts about the
    reading; its "origins": {split or "all": each image's file, relative to `folder`, (N,) object array})."""
    if pipeline not in PIPELINES:
        raise UserError(f"data.pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
    files, classes, skipped_hidden = list_files(folder)
    geometry = (pipeline, size, channels)
    key = cache_key(files, geometry)
    cached = _read_cache(key)
    if cached is not None:
        images, labels, parts, bad = cached
    else:
        images, labels, parts, bad = _decode_all(files, classes, geometry, progress)
        _write_cache(key, images, labels, parts, bad)
    if bad and not skip_bad:
        names = ", ".join(str(Path(f).relative_to(folder)) for f, _ in bad[:3])
        raise UserError(f"{folder}: {len(bad)} file(s) are not images that can be decoded ({names}"
                        f"{', ...' if len(bad) > 3 else ''}: {bad[0][1]}); fix or remove them, or pass "
                        "--skip-bad-images to leave them out")
    raw = {part: (images[parts == part], labels[parts == part]) for part in dict.fromkeys(parts.tolist())}
    unread = {path for path, _ in bad}
    paths = np.array([str(Path(path).relative_to(folder)) for path, _, _ in files if path not in unread],
                     dtype=object)  # in the order of `images`: decoding keeps the files' order
    facts = {"folder": str(folder), "files": len(files), "skipped_bad_images": len(bad),
             "skipped_hidden": skipped_hidden, "cached": cached is not None,
             "origins": {part: paths[parts == part] for part in raw}}
    if bad:  # --skip-bad-images: said, not silent
        warnings.warn(f"{folder}: left out {len(bad)} of {len(files)} files that cannot be decoded "
                      f"({bad[0][1]}{'; ...' if len(bad) > 1 else ''})", Notice,
                      stacklevel=2)
    if skipped_hidden:
        warnings.warn(f"{folder}: skipped {skipped_hidden} hidden files or folders (names starting with '.')",
                      Notice, stacklevel=2)
    return raw, classes, facts


def list_files(folder: Path) -> tuple[list[tuple[str, str, str]], tuple[str, ...], int]:
    """[(path, split or "all", class name)] in a stable order, the sorted class names, and how many hidden entries
    were skipped; the layout's mistakes (one class, an empty class, a split missing a class, train without test,
    split folders beside class folders, names that clash) are refused."""
    entries = [p for p in folder.iterdir() if p.is_dir()]
    split_dirs = {s: folder / s for s in SPLITS if (folder / s).is_dir()}
    if split_dirs:
        others = sorted(p.name for p in entries if p.name not in SPLITS and not hidden(p))
        if others:
            raise UserError(f"{folder}: holds {', '.join(f'{s}/' for s in split_dirs)} beside other folders "
                            f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); either put every class "
                            "folder under train/ and test/ (and val/), or keep the class folders at the top and "
                            "rename any class called train, val or test")
        if "train" not in split_dirs or "test" not in split_dirs:
            raise UserError(f"{folder}: split folders need at least train/ and test/ (found "
                            f"{', '.join(f'{s}/' for s in split_dirs)}); or put the class folders at the top")
        roots = split_dirs
    else:
        roots = {"all": folder}
    skipped = 0
    per_split = {}
    for part, root in roots.items():
        dirs = [p for p in root.iterdir() if p.is_dir()]
        skipped += sum(hidden(p) for p in dirs)
        per_split[part] = sorted(p.name for p in dirs if not hidden(p))
    classes = tuple(per_split["train" if split_dirs else "all"])
    if len(classes) < 2:
        raise UserError(f"{roots.get('train', folder)}: a classifier needs two classes (sub-folders) or more, found "
                        f"{len(classes)}")
    check_class_names(list(classes), roots.get("train", folder))
    files = []
    for part, root in roots.items():
        if per_split[part] != list(classes):
            missing = sorted(set(classes) - set(per_split[part]))
            extra = sorted(set(per_split[part]) - set(classes))
            raise UserError(f"{root}: its classes differ from train's (missing {missing}, extra {extra}); every "
                            "split needs the same class folders")
        for name in classes:
            left_out: list[Path] = []
            found = image_files([root / name], hidden_out=left_out)
            skipped += len(left_out)
            if not found:
                raise UserError(f"{root / name}: the class has no image files ({', '.join(IMAGE_SUFFIXES[:6])}, "
                                "...)")
            files += [(str(f), part, name) for f in found]
    return files, classes, skipped


def _decode_one(job: tuple[str, tuple[str, int, int]]) -> np.ndarray | str:
    """One file through the pipeline prediction uses; or why it cannot be used."""
    path, (pipeline, size, channels) = job
    try:
        return preprocess(path, size=size, channels=channels, pipeline=pipeline)
    except ImageError as e:
        return str(e)


def _decode_all(files, classes: tuple[str, ...], geometry: tuple[str, int, int], progress: bool):
    from tqdm.auto import tqdm

    _, size, channels = geometry
    images = np.zeros((len(files), size, size) + ((channels,) if channels > 1 else ()), dtype=np.uint8)
    keep = np.ones(len(files), dtype=bool)
    bad = []
    jobs = [(path, geometry) for path, _, _ in files]
    workers = max(1, min(os.cpu_count() or 1, 8))
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        results = pool.map(_decode_one, jobs, chunksize=64) if pool else map(_decode_one, jobs)
        for i, result in enumerate(tqdm(results, total=len(jobs), desc="decoding images", unit="img",
                                        disable=None if progress else True, leave=False)):
            if isinstance(result, str):
                keep[i] = False
                bad.append((files[i][0], result))
            else:
                images[i] = result
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    labels = np.array([classes.index(c) for _, _, c in files], dtype=np.int64)
    parts = np.array([p for _, p, _ in files])
    return images[keep], labels[keep], parts[keep], bad


# -- the cache ---------------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fashion-ensemble"


def cache_key(files, geometry: tuple[str, int, int]) -> str:
    """Changes when any file is added, removed, renamed, resized or touched, or the pipeline or geometry (pipeline,
    size, channels) changes."""
    pipeline, size, channels = geometry
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "pipeline": pipeline, "size": size,
                                   "channels": channels}).encode())
    for path, part, name in files:
        info = os.stat(path)
        h.update(f"{path}\0{part}\0{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _read_cache(key: str):
    path = cache_dir() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            bad = list(zip(z["bad_files"].tolist(), z["bad_reasons"].tolist()))
            return z["images"], z["labels"], z["parts"], bad
    except (OSError, ValueError, KeyError):  # damaged: decode again
        return None


def _write_cache(key: str, images, labels, parts, bad) -> None:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.npz"
        np.savez(tmp, images=images, labels=labels, parts=parts.astype(str),
                 bad_files=np.array([f for f, _ in bad], dtype=str),
                 bad_reasons=np.array([r for _, r in bad], dtype=str))
        tmp.replace(folder / f"{key}.npz")
    except OSError:  # a read-only home: no cache, the next run decodes again
        pass
