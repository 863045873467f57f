"""Which reader reads a data source: `DataConfig.source` is "fashion-mnist" (the official IDX files, checked against
their checksums; `--data-dir` or $FASHION_MNIST_DIR says where they are), or the path of a folder whose layout says
what it holds:
- any IDX data set in the same four-file layout: the same checks but no checksums, class names from an optional
  `classes.txt` beside the files (one per line), else "0".."K-1" (idx.py);
- an image folder, one sub-folder per class, optionally under train/, val/, test/ (imagefolder.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashion_ensemble.config import FASHION_MNIST, DataConfig
from fashion_ensemble.config.classes import CLASSES
from fashion_ensemble.data.idx import FILES, idx_classes, load_raw
from fashion_ensemble.data.imagefolder import is_image_folder, load_image_folder
from fashion_ensemble.errors import UserError


def load_source(cfg: DataConfig, data_dir=None, progress: bool = True
                ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...], dict, dict[str, np.ndarray]]:
    """The parts of `cfg.source` as it gives them ("train" and "test", also "val" from an image folder that has one,
    or "all" from one without split folders; as `load_raw` returns them), its class names, what reading left
    out ({"skipped_bad_images": n, "skipped_hidden": n}, only the counts above 0; {} for IDX files), and where each
    image came from ({part: (N,) object array of `origin`s})."""
    idx = cfg.source == FASHION_MNIST or (Path(cfg.source) / FILES["train"][0]).is_file()
    if idx and cfg.channels != 1:
        raise UserError(f"data source {cfg.source}: IDX files hold greyscale images; leave data.channels at 1 (got "
                        f"{cfg.channels})")
    if cfg.source == FASHION_MNIST:
        if cfg.image_size != 28:
            raise UserError(f"Fashion-MNIST's images are 28×28; leave data.image_size at 28 (got {cfg.image_size})")
        raw = load_raw(data_dir, verify_checksums=cfg.verify_checksums)
        return raw, CLASSES, {}, idx_origins(raw)
    folder = Path(cfg.source)
    if not folder.is_dir():
        raise UserError(f"data source {cfg.source!r} is neither {FASHION_MNIST!r} nor a folder")
    if idx:
        raw = load_raw(folder, verify_checksums=False, num_classes=None, size=cfg.image_size)
        return raw, idx_classes(folder, raw), {}, idx_origins(raw)
    if is_image_folder(folder):
        raw, classes, facts = load_image_folder(folder, pipeline=cfg.pipeline, skip_bad=cfg.skip_bad_images,
                                                progress=progress, size=cfg.image_size, channels=cfg.channels)
        left_out = {k: facts[k] for k in ("skipped_bad_images", "skipped_hidden") if facts[k]}
        return raw, classes, left_out, facts["origins"]
    raise UserError(f"{folder}: neither the four IDX files ({', '.join(f for pair in FILES.values() for f in pair)}) "
                    "nor class sub-folders of images")


def idx_origins(raw: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each IDX image's origin: its images file and its place in it, "t10k-images-idx3-ubyte.gz[123]" (0-based)."""
    return places(raw, lambda part: FILES[part][0])


def places(raw: dict[str, tuple[np.ndarray, np.ndarray]], name=str) -> dict[str, np.ndarray]:
    """{part: (N,) object array "NAME[i]"}: each image named by its part's `name(part)` and its 0-based place."""
    return {part: np.array([f"{name(part)}[{i}]" for i in range(len(y))], dtype=object) for part, (_, y) in raw.items()}
