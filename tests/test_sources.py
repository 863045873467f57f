"""Data sources: any IDX data set in Fashion-MNIST's four-file layout, its classes from classes.txt, through the
whole product (study, report, load, predict, export, serve); old run folders still load as Fashion-MNIST."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

import fashion_ensemble as fe
from fashion_ensemble.data import FILES, load_source
from fashion_ensemble.errors import UserError
from fashion_ensemble.export import export_onnx
from fashion_ensemble.serve import ServeConfig, create_app
from helpers import png_bytes, smoke_config, synthetic_images, write_config, write_idx

NAMES = ["cat", "dog", "bird"]


def idx_folder(folder, classes: int = 3, names: list[str] | None = NAMES, n_train: int = 300, n_test: int = 90):
    """An IDX data set of `classes` classes (synthetic bars), with classes.txt when `names` is given."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % classes).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(folder / FILES[part][0], synthetic_images(labels))
        write_idx(folder / FILES[part][1], labels)
    if names is not None:
        (folder / "classes.txt").write_text("\n".join(names) + "\n")
    return folder


def config_for(folder):
    cfg = smoke_config()
    return cfg.replace(data=dataclasses.replace(cfg.data, source=str(folder)))


@pytest.fixture(scope="module")
def animals(tmp_path_factory):
    root = tmp_path_factory.mktemp("animals")
    return fe.run_study(config_for(idx_folder(root / "data")), root / "run", device="cpu", progress=False)


def test_the_study_uses_the_data_set_s_classes(animals):
    m = json.loads((animals / "metrics.json").read_text())
    assert m["classes"] == NAMES
    for name in ("ann", "cnn", "ensemble"):
        assert list(m["models"][name]["per_class"]) == NAMES
        assert np.array(m["models"][name]["confusion_matrix"]).shape == (3, 3)
        assert "similar_class_confusions" not in m["models"][name]  # Fashion-MNIST's garment group only
    assert m["split"]["class_counts"]["test"] == [30, 30, 30]
    assert json.loads((animals / "config.json").read_text())["data"]["source"].endswith("data")
    report = (animals / "report.md").read_text()
    assert "| cat |" in report and "paper" not in report  # the paper's rows compare only on Fashion-MNIST


def test_load_predict_export_and_serve_speak_the_data_set_s_classes(animals, tmp_path):
    model = fe.load(animals)
    assert model.classes == NAMES
    images = synthetic_images(np.array([0, 1, 2]))
    proba = model.predict_proba(images)
    assert proba.shape == (3, 3) and np.allclose(proba.sum(1), 1)
    path = export_onnx(model, tmp_path / "m.onnx")[0]
    session = ort.InferenceSession(str(path))
    out = session.run(None, {"images": (images / 255).astype(np.float32)})[0]
    assert out.shape == (3, 3) and np.abs(out - proba).max() < 1e-4
    assert json.loads(session.get_modelmeta().custom_metadata_map["classes"]) == NAMES
    with TestClient(create_app(animals, ServeConfig()), base_url="http://localhost") as c:
        assert c.get("/health").json()["classes"] == NAMES
        answer = c.post("/predict", content=png_bytes(images[1])).json()
        assert answer["label"] in NAMES and set(answer["probabilities"]) == set(NAMES)


def test_class_names_default_to_the_labels(tmp_path):
    cfg = config_for(idx_folder(tmp_path / "d", classes=4, names=None))
    assert load_source(cfg.data)[1] == ("0", "1", "2", "3")


@pytest.mark.parametrize("names, classes, message", [
    (["cat", "dog"], 3, r"label 2 has no name in .*classes.txt"),
    (["cat", "cat", "dog"], 3, r"must differ, got \['cat'\]"),
    (None, 1, "two classes or more"),
])
def test_bad_class_names_are_refused(tmp_path, names, classes, message):
    cfg = config_for(idx_folder(tmp_path / "d", classes=classes, names=names))
    with pytest.raises(UserError, match=message):
        load_source(cfg.data)


def test_a_source_that_is_no_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="neither 'fashion-mnist' nor a folder"):
        load_source(config_for(tmp_path / "nowhere").data)


def test_a_run_folder_from_before_loads_as_fashion_mnist(tiny_run, tmp_path):
    old = shutil.copytree(tiny_run, tmp_path / "old")
    spec = json.loads((old / "ensemble.json").read_text())
    spec.pop("classes")  # as every folder written before data sources existed
    (old / "ensemble.json").write_text(json.dumps(spec))
    assert fe.load(old).classes == list(fe.CLASSES)
    spec["classes"] = ["only one"]
    (old / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match="two or more different names"):
        fe.load(old)


def test_cli_run_with_data(tmp_path):
    data = idx_folder(tmp_path / "data", names=["a", "b", "c"])
    cfg = write_config(tmp_path / "c.json", smoke_config())
    r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "run", "--config", str(cfg), "--data", str(data),
                        "--out", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["source"] == str(data)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["classes"] == ["a", "b", "c"]
