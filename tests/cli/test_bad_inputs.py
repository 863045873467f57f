"""The corpus of bad inputs: each gets its one-line error from the real CLI entry point, a non-zero exit, and no
traceback; plus property-based tests of the IDX reader. (Images: test_preprocess.py; requests: test_serve.py.)"""

import gzip
import json
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from safetensors.torch import save_file

from fashion_ensemble.data.idx import FILES, read_idx
from fashion_ensemble.errors import UserError
from helpers import idx_bytes, run_cli, write_dataset

TRAIN_IMAGES, TRAIN_LABELS = FILES["train"]


def damage_data(folder, how):
    images = folder / TRAIN_IMAGES
    labels = folder / TRAIN_LABELS
    raw = gzip.decompress(images.read_bytes())
    if how == "truncated":
        images.write_bytes(gzip.compress(raw[:-100]))
    elif how == "empty":
        images.write_bytes(b"")
    elif how == "wrong magic":
        images.write_bytes(gzip.compress(struct.pack(">I", 0x0803_0000) + raw[4:]))
    elif how == "wrong count":
        images.write_bytes(gzip.compress(raw[:4] + struct.pack(">I", 999) + raw[8:]))
    elif how == "not gzip":
        images.write_bytes(raw)
    elif how == "images and labels disagree":
        labels.write_bytes(gzip.compress(idx_bytes(np.zeros(399, np.uint8))))
    elif how == "label out of range":
        labels.write_bytes(gzip.compress(idx_bytes(np.full(400, 12, np.uint8))))
    elif how == "missing file":
        labels.unlink()
    elif how == "missing folder":
        shutil.rmtree(folder)


DATA_CASES = {
    "truncated": "truncated or padded",
    "empty": "the file is empty (0 bytes)",
    "wrong magic": "magic number 0x08030000",
    "wrong count": "header says (999, 28, 28)",
    "not gzip": "not a readable gzip file",
    "images and labels disagree": "holds 400 images but train-labels-idx1-ubyte.gz holds 399 labels",
    "label out of range": "label 12 out of range 0..9",
    "missing file": "file not found",
    "missing folder": "does not exist",
}


@pytest.mark.parametrize("how", list(DATA_CASES))
def test_bad_data_files(capsys, tmp_path, how):
    folder = write_dataset(tmp_path / "data")
    damage_data(folder, how)
    code, err = run_cli(capsys, "data", "check", "--data-dir", str(folder))
    assert code == 2 and DATA_CASES[how] in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


CONFIG_CASES = {
    "zero epochs": ({"members": {"ann": {"kind": "ann", "model": {}, "train": {"epochs": 0}}}}, "train.epochs"),
    "wrong type": ({"seed": "zero"}, "expected int, got 'zero'"),
    "unknown field": ({"members": {}, "learning_rate": 1}, "unknown field(s) ['learning_rate']"),
    "unknown kind": ({"members": {"x": {"kind": "rnn", "model": {}}}}, "member kind must be 'ann' or 'cnn'"),
    "bad protocol": ({"data": {"protocol": "kaggle"}}, "data.protocol"),
    "not JSON": ("{not json", "not valid JSON"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_values(capsys, tmp_path, case):
    content, message = CONFIG_CASES[case]
    path = tmp_path / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    code, err = run_cli(capsys, "run", "--config", str(path), "--out", str(tmp_path / "run"))
    assert code == 2 and message in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    (["run", "--profile", "huge"], "invalid choice: 'huge'"),
    (["run", "--seed", "one"], "invalid int value: 'one'"),
    (["predict"], "the following arguments are required"),
    (["serve", "RUN", "--port", "http"], "expected a TCP port 0..65535, got 'http'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_options(capsys, argv, message):
    code, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def damage_run(run, how):
    if how == "file missing":
        (run / "ensemble.json").unlink()
    elif how == "weights missing":
        (run / "cnn.safetensors").unlink()
    elif how == "wrong shape":
        from safetensors.torch import load_file

        state = load_file(str(run / "ann.safetensors"))
        key = next(k for k in state if k.endswith("weight") and state[k].ndim == 2)
        state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
        save_file(state, str(run / "ann.safetensors"))
    elif how == "pickle":
        (run / "ann.safetensors").write_bytes(pickle.dumps({"weight": [1, 2, 3]}))
    elif how == "bad JSON":
        (run / "config.json").write_text("{")


RUN_CASES = {
    "file missing": "ensemble.json is missing",
    "weights missing": "cnn.safetensors is missing",
    "wrong shape": "has shape",
    "pickle": "never read from pickles",
    "bad JSON": "config.json: not valid JSON",
}


@pytest.mark.parametrize("how", list(RUN_CASES))
def test_bad_run_folders(capsys, tmp_path, tiny_run, how):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    damage_run(run, how)
    for argv in (["evaluate", str(run), "--data-dir", str(tiny_run.parent / "data")],
                 ["export", str(run), "--onnx", str(tmp_path / "m.onnx")]):
        code, err = run_cli(capsys, *argv)
        assert code == 2 and RUN_CASES[how] in err, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_property_any_bytes_are_read_or_refused_clearly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("idx") / "x.gz"
    path.write_bytes(gzip.compress(data))
    try:
        array, _ = read_idx(path)
    except UserError:
        return
    assert array.dtype == np.uint8 and array.ndim in (1, 3)


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.one_of(st.tuples(st.integers(0, 50)),
                                  st.tuples(st.integers(0, 5), st.integers(1, 9), st.integers(1, 9)))))
def test_property_idx_round_trip(tmp_path_factory, array):
    path = tmp_path_factory.mktemp("idx") / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    back, _ = read_idx(path)
    assert back.shape == array.shape and np.array_equal(back, array)


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 20), st.just(3), st.just(3))), st.integers(1, 40))
def test_property_a_cut_file_is_refused(tmp_path_factory, array, cut):
    raw = idx_bytes(array)
    path = tmp_path_factory.mktemp("idx") / "x.gz"
    path.write_bytes(gzip.compress(raw[: max(0, len(raw) - cut)]))
    with pytest.raises(UserError):
        read_idx(path)
