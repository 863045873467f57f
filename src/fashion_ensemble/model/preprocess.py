"""Any common image → the models' input: (28, 28) uint8, garment bright on black (or another size, or RGB).

Fashion-MNIST was made from Zalando's product photos in these steps (the data set's README): trim the edges close to
the corner colour (5% of the maximum), resize the longest edge to 28, sharpen, extend the shortest edge to 28 with the
image centred, negate, convert to 8-bit greyscale. `preprocess` does the same, except that it resizes with an
antialiasing Lanczos filter (sharp already, so no sharpening step) and negates only a light background, so that an
image that is already bright on black (e.g. a Fashion-MNIST image itself) is left as it is. Other data sets may ask
for another `size` (S×S) and for colour (`channels=3`: (S, S, 3), trimmed and fitted the same way but neither negated
nor rescaled, the margin filled with the background's colour).

Decoding uses Pillow (PNG, JPEG, WebP, AVIF, BMP, GIF's first frame, TIFF, ... every format it can read). Hostile
input costs bounded work: a path must be a regular file no larger than `MAX_FILE_BYTES`, the pixel count is checked
from the header before anything is decoded (a decompression bomb is refused without allocating its pixels), a large
JPEG is decoded at a reduced scale, and any image is reduced to about `WORK_SIDE` pixels on its longest side before
it is converted to floats. The EXIF orientation is applied, as a browser or a phone's gallery shows the photo.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fashion_ensemble.config import PIPELINES
from fashion_ensemble.errors import UserError

SIZE = 28
MAX_PIXELS = 50_000_000  # 50 MP: above any camera's photo; its RGBA decode is 200 MB
MAX_FILE_BYTES = 256 * 2**20  # a file larger than this is refused before it is read (a phone's JPEG is 2-8 MB)
WORK_SIDE = 1024  # larger images are reduced (box filter) to about this before float conversion; the model sees 28
TRIM_THRESHOLD = 0.05  # Zalando's: pixels within 5% of the background colour count as background
ORIENTATION = 0x0112  # the EXIF tag a phone sets instead of rotating the pixels
# The file names of every format Pillow can read here, but those it can only identify (scientific stubs, Windows
# metafiles) or needs another program for (EPS: Ghostscript).
_UNREADABLE = {"BUFR", "GRIB", "HDF5", "WMF", "MPEG", "EPS"}
Image.init()
IMAGE_SUFFIXES = tuple(sorted(ext for ext, fmt in Image.registered_extensions().items()
                              if fmt in Image.OPEN and fmt not in _UNREADABLE))


class ImageError(UserError):
    """An image that cannot be used; `reason` is one of "empty", "not_an_image", "too_large", "too_many_pixels",
    "corrupt", "blank" (the HTTP service maps it to a status code)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def preprocess(source, *, size: int = SIZE, channels: int = 1, pipeline: str = "preprocess",
               max_pixels: int = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """A path, bytes, binary file object, PIL image or numpy array (H, W) / (H, W, 3|4), uint8 or float in [0, 1] →
    (size, size) uint8, garment bright on black; with `channels=3`, (size, size, 3) RGB. `pipeline="pad"`: no
    trimming or negation, only a resize of the longest side and a centred pad on black (for images that already
    are model inputs; a run trained that way predicts that way)."""
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}")
    if pipeline not in PIPELINES:
        raise UserError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
    if isinstance(source, np.ndarray):
        source = from_array(source, name or "image")
    image = shrink(open_image(source, max_pixels=max_pixels, name=name))
    if pipeline == "pad":
        return pad_to_size(image, size, channels)
    try:
        return to_model_input(greyscale(image), size) if channels == 1 else to_rgb_input(image, size)
    except ImageError as e:  # e.g. blank: say which image
        raise ImageError(f"{name}: {e}" if name else str(e), e.reason) from None


def from_array(array: np.ndarray, name: str = "image") -> Image.Image:
    """A numpy image — (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA; uint8, or float in [0, 1] — as a PIL image
    (OpenCV users: convert BGR to RGB first)."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: expected an image array (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}",
                         "corrupt")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array).all()
        if not finite or array.size and (array.min() < 0 or array.max() > 1):
            raise ImageError(f"{name}: float pixels must lie in [0, 1] (divide uint8 by 255)", "corrupt")
        array = np.round(array * 255)
    elif array.dtype != np.uint8:
        raise ImageError(f"{name}: expected uint8 or float pixels, got dtype {array.dtype}", "corrupt")
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))


def read_file(path: str | os.PathLike, name: str | None = None, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, its size checked first: a FIFO, a device or a folder is refused, not read."""
    name = name or str(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{name}: not a regular file (a folder, FIFO or device); only image files are read",
                             "not_an_image")
        if info.st_size > max_bytes:
            raise ImageError(f"{name}: {info.st_size:,} bytes is more than the limit of {max_bytes:,}", "too_large")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ImageError(f"{name}: cannot read the file ({e.strerror or e})", "not_an_image") from None
    if len(data) > max_bytes:  # it grew since the check
        raise ImageError(f"{name}: more than the limit of {max_bytes:,} bytes", "too_large")
    return data


def header_pixels(data: bytes, *, max_pixels: int = MAX_PIXELS, name: str = "image") -> int:
    """The pixel count an encoded image's header declares, without decoding it (the same refusals as `open_image`
    for what is not an image or has too many pixels)."""
    w, h = _open(data, max_pixels, name).size
    return w * h


def open_image(source, *, max_pixels: int = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Decode the first frame, upright, refusing images of more than `max_pixels` before decoding them."""
    if isinstance(source, Image.Image):
        return upright(_check_size(source, max_pixels, name or "image"))
    if isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        source = read_file(source, name)
    elif hasattr(source, "read"):
        source = source.read()
    name = name or "image"
    if not isinstance(source, (bytes, bytearray, memoryview)):
        raise UserError(f"expected an image: a path, bytes, a binary file, a PIL image or a numpy array, got "
                        f"{type(source).__name__}")
    image = _open(source, max_pixels, name)
    if image.format == "JPEG" and max(image.size) > WORK_SIDE:
        image.draft(image.mode, (WORK_SIDE, WORK_SIDE))  # decoded at 1/2, 1/4 or 1/8 scale, not at full size
    try:
        image.load()  # a freshly opened file stands at its first frame (GIF, WebP, TIFF)
        return upright(image)
    except Exception as e:  # truncated or corrupt pixel data
        raise ImageError(f"{name}: corrupt or truncated {image.format} image ({type(e).__name__}: {e})",
                         "corrupt") from None


def _open(source: bytes, max_pixels: int, name: str) -> Image.Image:
    """Parse the header only (Pillow decodes lazily), refusing what is not an image or has too many pixels."""
    if len(source) == 0:
        raise ImageError(f"{name}: the file is empty (0 bytes)", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own, stricter limit
            image = Image.open(io.BytesIO(source))
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        if isinstance(e, Image.DecompressionBombError):
            raise ImageError(f"{name}: too many pixels ({e})", "too_many_pixels") from None
        raise ImageError(f"{name}: not an image Pillow can read (PNG, JPEG, WebP, AVIF, BMP, GIF, TIFF, ...)",
                         "not_an_image") from None
    except Exception as e:  # a malformed header can raise almost anything inside a decoder
        raise ImageError(f"{name}: unreadable image header ({type(e).__name__}: {e})", "corrupt") from None
    return _check_size(image, max_pixels, name)


def upright(image: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: its EXIF orientation applied (a phone stores a portrait shot sideways
    and sets the tag; browsers honour it)."""
    try:
        orientation = image.getexif().get(ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: the pixels are still good
        return image
    return image if orientation == 1 else ImageOps.exif_transpose(image)


def shrink(image: Image.Image) -> Image.Image:
    """An image longer than `WORK_SIDE` on a side reduced by a whole factor (a box filter) to at most that, so that
    the float work after it is bounded (~1 MP) whatever the image's size; modes the filter cannot average (1-bit,
    palette, 16-bit) are converted first."""
    factor = math.ceil(max(image.size) / WORK_SIDE)
    if factor <= 1:
        return image
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    return image.reduce(factor)


def _check_size(image: Image.Image, max_pixels: int, name: str) -> Image.Image:
    w, h = image.size
    if w * h > max_pixels:
        raise ImageError(f"{name}: {w}×{h} = {w * h:,} pixels is more than the limit of {max_pixels:,}",
                         "too_many_pixels")
    if w == 0 or h == 0:
        raise ImageError(f"{name}: the image has no pixels ({w}×{h})", "empty")
    return image


def greyscale(image: Image.Image) -> np.ndarray:
    """Any mode → float32 (H, W) in [0, 1]. Transparency is laid over white (a product photo's usual background);
    16-bit images keep their depth; colour uses ITU-R 601 luma, as Pillow's own "L" conversion does."""
    mode = image.mode
    if mode == "L":  # the common case, and the data set's own: no colour work
        return np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if mode == "I":  # 32-bit integers: 16-bit PNGs decode to this
        x = np.asarray(image, dtype=np.float32)
        return np.clip(x / (65535.0 if x.max() > 255 else 255.0), 0, 1)
    if mode == "F":
        x = np.nan_to_num(np.asarray(image, dtype=np.float32))
        return np.clip(x if x.max() <= 1.0 else x / 255.0, 0, 1)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
    rgba = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    luma = rgba[..., 0] * 0.299 + rgba[..., 1] * 0.587 + rgba[..., 2] * 0.114
    if has_alpha:
        alpha = rgba[..., 3]
        luma = luma * alpha + (1.0 - alpha)
    return luma


HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # greyscale modes that Pillow's convert() would clip


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale as 8-bit "L", scaled as `greyscale` scales them (Pillow's own convert()
    clips them at 255, which turns a 16-bit image into two grey levels); any other mode as it is. Every pipeline
    that hands an image to convert() passes it through here first."""
    if image.mode not in HIGH_DEPTH:
        return image
    return Image.fromarray(np.round(greyscale(image) * 255).astype(np.uint8))


def pad_to_size(image: Image.Image, size: int = SIZE, channels: int = 1) -> np.ndarray:
    """The "pad" pipeline: the pixels as they are, the longest side resized to `size` (Lanczos) and centred on black;
    (size, size) uint8, or (size, size, 3) RGB."""
    image = eight_bit(image).convert("L" if channels == 1 else "RGB")
    w, h = image.size
    scale = size / max(w, h)
    if scale != 1:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    out = np.zeros((size, size) if channels == 1 else (size, size, channels), dtype=np.uint8)
    w, h = image.size
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = np.asarray(image)
    return out


def to_model_input(x: np.ndarray, size: int = SIZE) -> np.ndarray:
    """float (H, W) in [0, 1] → (size, size) uint8: background to black, trimmed, longest edge `size`, centred."""
    if x.ndim != 2:
        raise ImageError(f"expected one greyscale image (H, W), got shape {x.shape}", "corrupt")
    x = x.astype(np.float32)
    background = corner_colour(x)
    if background > 0.5:  # light background: negate so that the garment is bright on black
        x, background = 1.0 - x, 1.0 - background
    x = trim(x, np.abs(x - background) > TRIM_THRESHOLD)
    x = np.clip((x - background) / max(1.0 - background, 1e-6), 0, 1)  # background → 0, as in Fashion-MNIST
    out = np.round(fit(x[..., None], size, np.zeros(1, np.float32))[..., 0] * 255).astype(np.uint8)
    if not out.any():  # every content pixel was darker than the background after negation: nothing left to see
        raise ImageError("the image is blank: nothing is brighter than its background once a light background is "
                         "negated (a garment lighter than a light background, or darker than a dark one)", "blank")
    return out


def to_rgb_input(image: Image.Image, size: int = SIZE) -> np.ndarray:
    """A decoded image → (size, size, 3) uint8 RGB: trimmed to what differs from the corners' colour (transparency
    over white), longest edge `size`, centred, the margin in the background's colour."""
    image = eight_bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    rgba = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    x = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]) if has_alpha else rgba
    background = np.array([corner_colour(x[..., c]) for c in range(3)], dtype=np.float32)
    x = trim(x, (np.abs(x - background) > TRIM_THRESHOLD).any(axis=2))
    return np.round(fit(x, size, background) * 255).astype(np.uint8)


def trim(x: np.ndarray, content: np.ndarray) -> np.ndarray:
    """`x` cropped to the smallest rectangle holding every `content` pixel ((H, W) mask); an image without any is
    refused as blank."""
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if len(rows) == 0:
        raise ImageError("the image is blank: no pixel differs from the background by more than 5%", "blank")
    return x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit(x: np.ndarray, size: int, fill: np.ndarray) -> np.ndarray:
    """float (H, W, C) → (size, size, C): the longest edge resized to `size` (Lanczos), centred on `fill`."""
    h, w, c = x.shape
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_h, new_w) != (h, w):
        x = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(x[..., i])).resize(
            (new_w, new_h), Image.Resampling.LANCZOS)) for i in range(c)], axis=-1)
    out = np.empty((size, size, c), dtype=np.float32)
    out[:] = fill
    top, left = (size - new_h + 1) // 2, (size - new_w + 1) // 2  # odd margin: extra pixel first (data set)
    out[top : top + new_h, left : left + new_w] = np.clip(x, 0, 1)
    return out


def corner_colour(x: np.ndarray) -> float:
    """The background level as Zalando took it, from the corners: the median of the four corner patches' means (a
    garment can fill a corner or two, rarely three)."""
    k = max(1, min(x.shape) // 28)  # 1 pixel for 28×28, 8 for 224×224: averages out JPEG noise
    if k == 1:
        corners = x[[0, 0, -1, -1], [0, -1, 0, -1]].tolist()
    else:
        corners = [float(p.mean()) for p in (x[:k, :k], x[:k, -k:], x[-k:, :k], x[-k:, -k:])]
    low, mid1, mid2, high = sorted(corners)  # the median of four; np.median costs 20 µs of a 250 µs call here
    return (mid1 + mid2) / 2


def to_png(image28: np.ndarray) -> bytes:
    """(S, S) or (S, S, 3) uint8 → PNG bytes (for showing what the model saw)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image28, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def as_photo(image28: np.ndarray, size: int = 224, quality: int = 90) -> bytes:
    """The reverse trip, for tests and `evaluate --photos`: a (28, 28) image as an upscaled RGB JPEG, garment dark
    on white, like a product photo (an RGB input (S, S, 3), in its own colours, is only upscaled)."""
    pixels = np.asarray(image28, dtype=np.uint8)
    photo = Image.fromarray(pixels if pixels.ndim == 3 else 255 - pixels).resize((size, size),
                                                                                 Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    photo.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def hidden(path: Path) -> bool:
    """The one rule for what a folder walk leaves out: names starting with "." (system and editor files)."""
    return path.name.startswith(".")


def image_files(paths, hidden_out: list | None = None) -> list[Path]:
    """Files named directly, plus the image files (by suffix, regular files only) anywhere under named folders, in a
    stable order. Hidden entries under a folder (names starting with ".": `.DS_Store`, macOS's `._x.png`,
    `.ipynb_checkpoints/`) are skipped, and appended to `hidden_out` when given; a file named directly is always
    read. Symbolic links to folders are not followed, so a link loop cannot hang the walk."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = []
            for root, dirs, names in os.walk(p, followlinks=False):
                for d in [d for d in dirs if hidden(Path(d))]:
                    dirs.remove(d)  # not walked into
                    if hidden_out is not None:
                        hidden_out.append(Path(root) / d)
                for n in names:
                    f = Path(root) / n
                    if hidden(f):
                        if hidden_out is not None and f.suffix.lower() in IMAGE_SUFFIXES:
                            hidden_out.append(f)
                    elif f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                        found.append(f)
            files += sorted(found)
        else:
            files.append(p)
    return files
