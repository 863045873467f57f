"""Near-duplicates across parts: a pHash finds candidates, pixels confirm; rare classes are said by `data check`."""

import io

import numpy as np
import pytest
from PIL import Image

from fashion_ensemble.cli import main
from fashion_ensemble.data.duplicates import cross_split_near_copies, near_copies, phashes
from fashion_ensemble.data.split import rare_classes
from helpers import image_folder, png_bytes, synthetic_images


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.array(Image.open(buf))


def test_re_encoded_and_brightened_copies_are_found_and_other_images_are_not():
    earlier = synthetic_images(np.arange(10), seed=1)
    others = synthetic_images(np.arange(10), seed=2)  # the same classes, other images
    copies = np.stack([jpeg(earlier[0]), np.clip(earlier[1].astype(int) + 3, 0, 255).astype(np.uint8), earlier[2]])
    later = np.concatenate([copies, others])
    h_earlier, h_later = phashes(earlier), phashes(later)
    assert h_earlier.dtype == np.uint64 and len(set(h_earlier.tolist())) > 1
    assert near_copies(earlier, later, h_earlier, h_later) == 3
    assert near_copies(earlier, others, h_earlier, phashes(others)) == 0
    parts = {"train": earlier, "val": others, "test": copies}
    hashes = {k: phashes(v) for k, v in parts.items()}
    assert cross_split_near_copies(parts, hashes) == {"train/val": 0, "train/test": 3, "val/test": 0}


def test_rare_classes_are_those_under_a_tenth_of_the_largest():
    labels = np.array([0] * 100 + [1] * 10 + [2] * 9 + [3] * 50)
    assert rare_classes(labels, ["a", "b", "c", "d"]) == {"c": 9}


@pytest.mark.slow
def test_data_check_reports_near_copies_and_warns_of_a_rare_class(tmp_path, capsys):
    folder = image_folder(tmp_path / "photos", classes=("bag", "coat"), per_class=320, splits=["train"])
    for seed, (part, per_class) in enumerate((("train", 24), ("val", 3), ("test", 3)), start=10):
        for k, name in enumerate(("bag", "coat", "shoe")):
            if part == "train" and name != "shoe":
                continue
            (folder / part / name).mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(synthetic_images(np.full(per_class, k), seed=seed + 10 * k)):
                (folder / part / name / f"{i}.png").write_bytes(png_bytes(image))
    copy = np.array(Image.open(folder / "train" / "bag" / "000.png")).astype(int)
    copy[copy > 0] += 3  # the garment a little brighter, the background as it was: the same photo edited
    (folder / "test" / "bag" / "copy.webp").write_bytes(png_bytes(np.clip(copy, 0, 255).astype(np.uint8),
                                                                  format="WEBP", lossless=True))
    assert main(["data", "check", "--data", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert "with a near copy (re-encoded, re-saved): train/val 0, train/test 1, val/test 0" in out
    assert "exact copy in an earlier part: train/val 0, train/test 0" in out
    assert "rare classes" in err and "shoe (30)" in err and "--balanced" in err
