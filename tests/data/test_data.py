import gzip

import numpy as np
import pytest
import torch

from fashion_ensemble.config import DataConfig
from fashion_ensemble.data.idx import FILES, load_raw, read_idx
from fashion_ensemble.data.split import CLASSES, make_split, one_hot
from fashion_ensemble.errors import UserError
from helpers import idx_bytes, write_dataset, write_idx


def test_read_idx_round_trip(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28).astype(np.uint8)
    labels = np.array([0, 9, 4], dtype=np.uint8)
    got, sha = read_idx(write_idx(tmp_path / "i.gz", images))
    np.testing.assert_array_equal(got, images)
    assert len(sha) == 64
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l.gz", labels))[0], labels)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # the same bytes whenever collected (test ids hold them; xdist compares ids)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"plain text, not gzip", "not a readable gzip"),
        (gz(b""), "too short"),
        (gz(b"\x00\x00\x08\x05" + b"\x00" * 12), "magic number"),
        (gz(idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10]), "truncated"),
        (gz(idx_bytes(np.zeros((4, 28, 28), np.uint8)) + b"extra"), "truncated or padded"),
        (gz(idx_bytes(np.zeros((4, 28, 28), np.uint8)))[:-20], "not a readable gzip"),
        (gz(b"\x00\x00\x08\x03\x00\x00\x00\x01\x00\x00"), "header truncated"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.gz"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_idx(path)


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(UserError, match="does not exist.*apt-get install dataset-fashion-mnist"):
        load_raw(tmp_path / "nowhere")
    folder = write_dataset(tmp_path / "d")
    (folder / FILES["test"][1]).unlink()
    with pytest.raises(UserError, match="file not found"):
        load_raw(folder, verify_checksums=False)


def test_count_mismatch_and_bad_shapes(tmp_path):
    folder = write_dataset(tmp_path / "d")
    write_idx(folder / FILES["train"][1], np.zeros(7, np.uint8))
    with pytest.raises(UserError, match="400 images but .* 7 labels"):
        load_raw(folder, verify_checksums=False)
    folder = write_dataset(tmp_path / "e")
    write_idx(folder / FILES["train"][0], np.zeros((400, 32, 32), np.uint8))
    with pytest.raises(UserError, match="expected 28×28 greyscale images"):
        load_raw(folder, verify_checksums=False)
    folder = write_dataset(tmp_path / "f")
    write_idx(folder / FILES["test"][1], np.full(100, 12, np.uint8))
    with pytest.raises(UserError, match="label 12 out of range"):
        load_raw(folder, verify_checksums=False)


def test_checksums_refuse_files_that_are_not_the_release(tiny_data):
    with pytest.raises(UserError, match="official release"):
        load_raw(tiny_data)


def test_standard_split_is_stratified_disjoint_and_repeatable(tiny_data):
    raw = load_raw(tiny_data, verify_checksums=False)
    split = make_split(DataConfig(protocol="standard", verify_checksums=False), raw=raw)
    assert [len(p[1]) for p in (split.train, split.val, split.test)] == [360, 40, 100]
    assert np.bincount(split.val[1], minlength=10).tolist() == [4] * 10  # stratified: 10% of each class
    np.testing.assert_array_equal(split.test[0], raw["test"][0])  # the official test set, untouched
    again = make_split(DataConfig(protocol="standard"), raw=raw)
    np.testing.assert_array_equal(again.val[1], split.val[1])
    facts = split.facts()
    assert facts["sizes"] == {"train": 360, "val": 40, "test": 100}
    assert facts["class_counts"]["val"] == [4] * 10


def test_paper_split_is_80_10_10_of_everything(tiny_data):
    raw = load_raw(tiny_data, verify_checksums=False)
    split = make_split(DataConfig(protocol="paper"), raw=raw)
    assert [len(p[1]) for p in (split.train, split.val, split.test)] == [400, 50, 50]
    assert np.bincount(split.test[1], minlength=10).tolist() == [5] * 10


def test_cross_split_duplicates_are_counted(tiny_data):
    raw = load_raw(tiny_data, verify_checksums=False)
    test_images = raw["test"][0].copy()
    test_images[:3] = raw["train"][0][:3]  # plant three exact copies of training images in the test set
    raw["test"] = (test_images, raw["test"][1])
    split = make_split(DataConfig(protocol="standard"), raw=raw)
    assert split.facts()["cross_split_duplicates"]["train/test"] + split.facts()["cross_split_duplicates"][
        "val/test"
    ] == 3


def test_normalisation_comes_from_train_only(tiny_data):
    raw = load_raw(tiny_data, verify_checksums=False)
    split = make_split(DataConfig(protocol="standard"), raw=raw)
    mean, std = split.mean_std
    assert mean == pytest.approx(split.train[0].mean() / 255.0)
    assert std == pytest.approx((split.train[0] / 255.0).std())


def test_one_hot_and_smoothing():
    t = one_hot(torch.tensor([2, 0]))
    assert t.tolist()[0] == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    s = one_hot(torch.tensor([2, 0]), smoothing=0.1)
    assert s.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert s[0, 2].item() == pytest.approx(0.9 + 0.01)


@pytest.mark.slow
def test_real_files(real_data):
    raw = load_raw(real_data)  # magic numbers, counts and SHA-256 against the official release
    assert raw["train"][0].shape == (60_000, 28, 28) and raw["test"][0].shape == (10_000, 28, 28)
    assert np.bincount(raw["test"][1]).tolist() == [1000] * len(CLASSES)
    split = make_split(DataConfig(protocol="standard"), raw=raw)
    assert split.facts()["sizes"] == {"train": 54_000, "val": 6_000, "test": 10_000}
