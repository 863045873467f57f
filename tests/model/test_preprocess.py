"""Photos of any format, mode and size → the 28×28 input, as Fashion-MNIST was made; bad files → ImageError."""


import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fashion_ensemble.model.preprocess import ImageError, as_photo, image_files, preprocess
from helpers import garment_photo, patched_png, png_bytes


def check_garment(x: np.ndarray):
    assert x.shape == (28, 28) and x.dtype == np.uint8
    rows, cols = np.nonzero(x > 128)
    assert cols.min() == 0 and cols.max() == 27  # longest edge resized to 28
    assert 13 <= rows.max() - rows.min() + 1 <= 15  # aspect ratio kept
    assert abs((rows.min() + rows.max()) / 2 - 13.5) <= 1  # centred vertically
    assert x[0].max() == 0 and x[-1].max() == 0  # white background → black after negation


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_common_format(fmt):
    check_garment(preprocess(png_bytes(garment_photo(), format=fmt)))


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "1", "CMYK", "LA"])
def test_every_mode(mode):
    check_garment(preprocess(png_bytes(garment_photo().convert(mode), format="TIFF" if mode == "CMYK" else "PNG")))


def test_transparent_background_counts_as_white():
    rgba = Image.new("RGBA", (300, 150), (0, 0, 0, 0))  # transparent *black*: the alpha decides, not the colour
    rgba.paste((40, 60, 90, 255), (50, 30, 250, 130))
    check_garment(preprocess(png_bytes(rgba)))


def test_sixteen_bit_keeps_its_depth():
    x = np.full((150, 300), 65535, dtype=np.uint16)
    x[30:130, 50:250] = 10000
    image = Image.fromarray(x)
    assert image.mode.startswith("I;16")
    check_garment(preprocess(png_bytes(image)))


def sixteen_bit_images(n: int = 60) -> list[bytes]:
    """`n` different 16-bit greyscale PNGs: a random dark garment on a random light background."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        x = np.full((60, 80), int(rng.integers(50_000, 65_536)), dtype=np.uint16)
        top, left = rng.integers(2, 20, size=2)
        x[top : top + 30, left : left + 50] = rng.integers(0, 30_000, size=(30, 50))
        out.append(png_bytes(Image.fromarray(x)))
    return out


@pytest.mark.parametrize("options", [{}, {"channels": 3}, {"pipeline": "pad"}, {"pipeline": "pad", "channels": 3}])
def test_sixteen_bit_images_keep_their_grey_levels_in_every_pipeline(options):
    inputs = [preprocess(data, **options) for data in sixteen_bit_images()]
    assert len({x.tobytes() for x in inputs}) == 60  # 60 different images stay 60 different inputs
    assert all(len(np.unique(x)) > 20 for x in inputs)  # not binarised at 255 by Pillow's convert()


def test_sixteen_bit_dark_on_white_in_rgb_is_not_blank_and_matches_the_greyscale_path():
    x = np.full((150, 300), 65535, dtype=np.uint16)
    x[30:130, 50:250] = 10000
    rgb = preprocess(png_bytes(Image.fromarray(x)), channels=3)
    assert rgb.shape == (28, 28, 3) and (rgb[..., 0] == rgb[..., 1]).all()
    dark = rgb[..., 0] < 100  # the garment in its own grey (RGB is not negated), on white
    assert dark.sum() > 100 and rgb[0, 0, 0] == 255


def test_a_float_tiff_is_not_black_under_pad():
    x = np.zeros((28, 28), np.float32)
    x[8:20, 6:22] = np.linspace(0.2, 1.0, 16, dtype=np.float32)  # a float image in [0, 1], bright on black
    image = Image.fromarray(x, mode="F")
    padded = preprocess(png_bytes(image, format="TIFF"), pipeline="pad")
    assert padded.max() == 255 and np.allclose(padded[8:20, 6:22], np.round(x[8:20, 6:22] * 255), atol=1)


def test_gif_first_frame_is_used():
    frames = [garment_photo().convert("P"), Image.new("P", (300, 150), 0)]
    data = png_bytes(frames[0], format="GIF", save_all=True, append_images=frames[1:])
    check_garment(preprocess(data))


def test_tiny_and_huge_sizes():
    check_garment(preprocess(garment_photo(30, 16, (1, 1, 29, 15))))
    check_garment(preprocess(garment_photo(3000, 1500, (500, 300, 2500, 1300))))


def test_bright_on_black_is_not_negated_and_a_dataset_image_passes_unchanged():
    x = np.zeros((28, 28), dtype=np.uint8)
    x[3:25, 0:28] = np.linspace(60, 250, 28).astype(np.uint8)  # fills the width, like most Fashion-MNIST images
    x[12, 5] = 0
    assert np.array_equal(preprocess(png_bytes(x)), x)


def test_photo_round_trip_is_close():
    x = np.zeros((28, 28), dtype=np.uint8)
    x[2:26, 0:28] = np.linspace(120, 250, 28).astype(np.uint8)  # smooth, like a garment (noise would not survive JPEG)
    x[10:14, 6:20] = 30
    back = preprocess(as_photo(x)).astype(float)
    # The bicubic upscale's halo widens the trimmed box by about a pixel (measured: mean |diff| 11 of 255, most of it
    # on the garment's edges); the garment itself stays where it was.
    assert np.corrcoef(back.ravel(), x.ravel())[0, 1] > 0.9
    assert np.abs(back - x).mean() < 15


def test_path_and_file_object_and_pil_inputs(tmp_path):
    path = tmp_path / "shirt.png"
    garment_photo().save(path)
    for source in (path, str(path), path.open("rb"), garment_photo()):
        check_garment(preprocess(source))


@pytest.mark.parametrize(
    "data, reason, message",
    [
        (b"", "empty", "empty"),
        (b"hello, I am not an image", "not_an_image", "not an image"),
        (png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:2000], "corrupt",
         "corrupt or truncated"),
        (patched_png(40_000, 40_000), "too_many_pixels", "too many pixels"),
        (patched_png(8_000, 8_000), "too_many_pixels", "64,000,000 pixels is more than the limit"),
        (png_bytes(np.full((40, 40), 255, np.uint8)), "blank", "blank"),
    ],
    ids=["empty", "not-an-image", "truncated", "decompression-bomb", "over-our-limit", "blank"],
)
def test_bad_files_get_a_reason(data, reason, message):
    with pytest.raises(ImageError, match=message) as e:
        preprocess(data, name="upload.png")
    assert e.value.reason == reason and "upload.png" in str(e.value) or reason == "blank"


def test_pixel_limit_is_a_parameter():
    with pytest.raises(ImageError) as e:
        preprocess(garment_photo(), max_pixels=1000)
    assert e.value.reason == "too_many_pixels"


def test_image_files_searches_folders(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.JPG", "a/notes.txt", "3.webp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in image_files([tmp_path / "a", tmp_path / "3.webp"])] == [
        "a/1.png", "a/b/2.JPG", "3.webp"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 80), w=st.integers(1, 80), seed=st.integers(0, 2**31),
    mode=st.sampled_from(["L", "RGB", "RGBA", "P", "I;16"]), fmt=st.sampled_from(["PNG", "JPEG", "BMP", "WEBP"]),
)
@example(h=1, w=3, seed=16, mode="RGBA", fmt="PNG")  # content only lighter than a light background: was all black
def test_property_any_image_gives_a_valid_input_or_a_clear_error(h, w, seed, mode, fmt):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8), "RGBA")
    image = image.convert(mode) if mode != "I;16" else Image.fromarray(rng.integers(0, 65536, (h, w), np.uint16))
    if fmt != "PNG" and mode not in ("L", "RGB"):  # PNG holds every mode; the others only some
        image = image.convert("RGB")
    try:
        x = preprocess(png_bytes(image, format=fmt))
    except ImageError as e:
        assert e.reason == "blank"  # a uniform image: nothing to find
        return
    assert x.shape == (28, 28) and x.dtype == np.uint8
    assert x.max() > 0  # the trimmed content fills the frame's longest edge


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_property_random_bytes_never_crash(data):
    try:
        preprocess(data)
    except ImageError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_property_a_damaged_png_gives_image_error(position, junk):
    good = png_bytes(garment_photo(60, 30, (10, 5, 50, 25)))
    bad = good[:position] + junk + good[position + len(junk):]
    try:
        preprocess(bad)
    except ImageError:
        pass
