"""ONNX export: one graph for the ensemble and one per member; ONNX Runtime agrees with PyTorch."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

import fashion_ensemble as fe
from fashion_ensemble.config import ANNConfig, CNNConfig
from fashion_ensemble.data.idx import load_raw
from fashion_ensemble.errors import UserError
from fashion_ensemble.members import build_model
from fashion_ensemble.model.ensemble import Member, SoftVotingEnsemble
from fashion_ensemble.serving.export import OnnxEnsemble, export_onnx


@pytest.mark.slow
def test_onnx_runtime_agrees_with_pytorch_on_real_test_images(tiny_run, real_data, tmp_path):
    images = load_raw(real_data, verify_checksums=False)["test"][0][:500]
    ensemble = fe.load(tiny_run, engine="torch")  # PyTorch's answers, against the files'
    assert all(m.temperature != 1.0 for m in ensemble.members.values())  # the smoke profile calibrates its members
    paths = export_onnx(ensemble, tmp_path / "model.onnx")
    assert [p.name for p in paths] == ["model.onnx", "model.ann.onnx", "model.cnn.onnx", "model.uint8.onnx"]

    proba, members = ensemble.predict_proba_members(images)
    x = (images / 255.0).astype(np.float32)
    session = ort.InferenceSession(str(paths[0]))
    outs = session.run(None, {"images": x})
    assert [o.name for o in session.get_outputs()] == ["probabilities", "ann_probabilities", "cnn_probabilities",
                                                       "ood_raw"]
    assert np.abs(outs[0] - proba).max() <= 1e-4
    for out, name in zip(outs[1:3], ["ann", "cnn"]):
        assert np.abs(out - members[name]).max() <= 1e-4
    features = {n: m.features(images) for n, m in ensemble.members.items()}
    np.testing.assert_allclose(outs[3], ensemble.ood.raw(features), atol=1e-3)  # the "I don't know" raw score
    for path, name in zip(paths[1:], ["ann", "cnn"]):
        alone = ort.InferenceSession(str(path)).run(None, {"images": x})[0]
        assert np.abs(alone - members[name]).max() <= 1e-4
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == ensemble.classes
    assert json.loads(meta["weights"]) == pytest.approx(ensemble.weights)
    assert json.loads(meta["ood_reference"]) == pytest.approx(ensemble.ood.reference, rel=1e-5)
    onnx = OnnxEnsemble(paths[0])
    noise = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    for batch in (images[:50], noise):  # the same scores and flags as PyTorch's (a raw score on a tie may move one)
        np.testing.assert_allclose(onnx.ood_score(batch), ensemble.ood_score(batch), atol=2 / len(onnx.ood.reference))


def test_onnx_ensemble_is_a_drop_in_for_predict_proba(tiny_run, real_data):
    images = load_raw(real_data, verify_checksums=False)["test"][0][:200]
    ensemble = fe.load(tiny_run, engine="torch")
    onnx = OnnxEnsemble(ensemble)
    assert list(onnx.members) == list(ensemble.members) and onnx.classes == ensemble.classes
    assert np.abs(onnx.predict_proba(images) - ensemble.predict_proba(images)).max() <= 1e-4
    assert np.allclose(onnx.predict_proba(images[:1]).sum(), 1.0, atol=1e-12)


def test_batch_size_is_free(tiny_run, tmp_path):
    path = export_onnx(fe.load(tiny_run), tmp_path / "m")[0]
    assert path.name == "m.onnx"
    session = ort.InferenceSession(str(path))
    for n in (1, 7):
        assert session.run(None, {"images": np.zeros((n, 28, 28), np.float32)})[0].shape == (n, 10)


def test_a_member_file_is_not_an_ensemble(tiny_run, tmp_path):
    paths = export_onnx(fe.load(tiny_run), tmp_path / "model.onnx")
    with pytest.raises(UserError, match="single member"):
        OnnxEnsemble(paths[1])


@pytest.mark.slow
def test_export_cli(tiny_run, tmp_path):
    r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "export", str(tiny_run), "--onnx",
                        str(tmp_path / "out" / "model.onnx")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "out" / f)
                                for f in ("model.onnx", "model.ann.onnx", "model.cnn.onnx", "model.uint8.onnx")]


@pytest.mark.slow
def test_export_writes_into_the_run_folder_by_default(tiny_run, tmp_path):
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "export", str(run)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(run / "model.onnx") and fe.load(run).classes  # the folder still loads


def test_the_uint8_model_cannot_be_fed_0_255_floats(tiny_run, tmp_path):
    import onnxruntime as ort

    from helpers import synthetic_images

    model = fe.load(tiny_run, engine="torch")
    paths = export_onnx(model, tmp_path / "model.onnx")
    images = synthetic_images(np.arange(16) % 10)
    session = ort.InferenceSession(str(paths[-1]))
    assert paths[-1].name == "model.uint8.onnx" and session.get_inputs()[0].type == "tensor(uint8)"
    meta = session.get_modelmeta().custom_metadata_map
    assert (meta["input_dtype"], meta["input_range"]) == ("uint8", "[0, 255]")
    assert ort.InferenceSession(str(paths[0])).get_modelmeta().custom_metadata_map["input_range"] == "[0, 1]"
    expected = model.predict_proba(images)
    assert np.abs(session.run(None, {"images": images})[0] - expected).max() < 1e-4
    with pytest.raises(Exception, match="(?i)type"):  # a float array is refused by ONNX Runtime, not misread
        session.run(None, {"images": images.astype(np.float32)})
    assert np.allclose(OnnxEnsemble(paths[-1]).predict_proba(images), expected, atol=1e-4)


def test_a_cnn_with_identity_shortcuts_exports_exactly():
    # No profile uses `residual` yet, so the trained fixtures do not cover its graph: an untrained one, with BatchNorm
    # statistics that are not the identity, must give ONNX Runtime what it gives PyTorch.
    torch.manual_seed(0)
    model = build_model("cnn", CNNConfig(stem=8, stages=((8, 8), (16, 16)), dw_bn=False, pool_first=True,
                                         residual=True))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    ensemble = SoftVotingEnsemble({"cnn": Member("cnn", model, tta_flip=True)})
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    onnx_proba = OnnxEnsemble(ensemble).predict_proba(images)
    np.testing.assert_allclose(onnx_proba, ensemble.predict_proba(images), atol=1e-5)


def test_members_with_shift_tta_export_exactly_at_any_batch_size():
    """The shifted views are built in the graph from the input's own shape, and OnnxEnsemble splits a large batch
    into runs of at most VIEWS_PER_RUN views: any batch gives what PyTorch gives, with the mirror on or off."""
    torch.manual_seed(0)
    cnn = build_model("cnn", CNNConfig(stem=8, stages=((8,), (16,)), dw_bn=False, pool_first=True))
    ann = build_model("ann", ANNConfig(hidden=(16,)))
    ensemble = SoftVotingEnsemble({"cnn": Member("cnn", cnn, tta_flip=True, tta_shift=1),
                                   "ann": Member("ann", ann, tta_shift=2)})
    graph = OnnxEnsemble(ensemble)
    assert graph.batch == 512 // 10  # images a session run: the CNN's 10 views each
    for n in (0, 1, 9, 120):  # 120: three runs of 51, 51 and 18 images, put back together in order
        images = np.random.default_rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8)
        np.testing.assert_allclose(graph.predict_proba(images), ensemble.predict_proba(images), atol=1e-5)
