"""Near-duplicate images across parts (a re-encoded, re-saved or slightly edited copy), beside the exact copies that
`Split.facts` counts: a perceptual hash (imagehash's pHash) finds candidates, their pixels confirm them.

Why both, measured on Fashion-MNIST's model inputs (docs/own-images.md#near-duplicates): distinct garments share a
pHash at 28×28 (two different boots at hash distance 0), so a hash alone would call hundreds of test images copies;
a JPEG re-encoding (quality 75) of an image stays within 6 bits of its hash and 6.2 grey levels of mean absolute
difference, while distinct garments whose hashes are within 4 bits differ by 8.1 grey levels or more.
"""

from __future__ import annotations

import numpy as np

HASH_BITS = 8  # candidates: pHashes at most this many of 64 bits apart (a JPEG copy moved up to 6)
MAX_MEAN_DIFFERENCE = 6.5  # confirmed: pixels at most this far apart on average, in grey levels of 255
CHUNK = 128  # later images compared at once: a (128, N_earlier) distance matrix, its candidates' pixels


def phashes(images: np.ndarray) -> np.ndarray:
    """(N,) uint64: each image's 64-bit pHash (images uint8 (N, S, S) or (N, S, S, 3))."""
    import imagehash
    from PIL import Image

    return np.array([int(str(imagehash.phash(Image.fromarray(im))), 16) for im in images], dtype=np.uint64)


def near_copies(earlier: np.ndarray, later: np.ndarray, h_earlier: np.ndarray, h_later: np.ndarray) -> int:
    """How many images of `later` have a near copy in `earlier` (exact copies included): a pHash within HASH_BITS
    and a mean absolute pixel difference within MAX_MEAN_DIFFERENCE."""
    a = earlier.reshape(len(earlier), -1).astype(np.int16)
    found = 0
    for start in range(0, len(later), CHUNK):
        hashes = h_later[start:start + CHUNK]
        close = np.bitwise_count(hashes[:, None] ^ h_earlier[None, :]) <= HASH_BITS  # (chunk, N_earlier)
        rows, cols = np.nonzero(close)
        if not len(rows):
            continue
        b = later[start:start + CHUNK].reshape(len(hashes), -1).astype(np.int16)
        diff = np.abs(b[rows] - a[cols]).mean(1)
        found += len(np.unique(rows[diff <= MAX_MEAN_DIFFERENCE]))
    return found


def cross_split_near_copies(parts: dict[str, np.ndarray], hashes: dict[str, np.ndarray]) -> dict[str, int]:
    """{"train/val": n, "train/test": n, "val/test": n}: images of the later part with a near copy in the earlier."""
    return {f"{a}/{b}": near_copies(parts[a], parts[b], hashes[a], hashes[b])
            for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}
