"""The model that ships with the package: it loads with no run folder, every command uses it, and it reproduces the
accuracy its card states on the real test set."""

import json
import subprocess
import sys

import numpy as np
import pytest

import fashion_ensemble as fe
from fashion_ensemble.data.idx import load_raw
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.runs import PRETRAINED
from helpers import garment_photo


@pytest.mark.slow
def test_the_shipped_model_reproduces_its_card(real_data):
    card = json.loads((PRETRAINED / "metrics.json").read_text())
    model = fe.pretrained()
    assert model.classes == card["classes"] and fe.load().classes == model.classes
    images, labels = load_raw(real_data)["test"]
    proba, _, scores = model.predict_with_ood(images)
    accuracy = float((proba.argmax(1) == labels).mean())
    assert accuracy == card["models"]["ensemble"]["accuracy"]  # the card's number exactly
    correct = proba.argmax(1) == labels  # the "I don't know" signal's false alarms, as the card states them
    assert float(model.ood.flags(scores)[correct].mean()) == card["ood"]["correct_flagged"]
    noise = np.random.default_rng(0).integers(0, 256, (100, 28, 28), dtype=np.uint8)
    assert model.is_ood(noise).all()
    assert "Model card" in (PRETRAINED / "MODEL_CARD.md").read_text()
    size = sum(p.stat().st_size for p in PRETRAINED.iterdir())
    assert size < 20 * 2**20, size


@pytest.mark.slow
def test_commands_use_the_shipped_model_without_a_run_folder(tmp_path):
    photo = tmp_path / "shoe.png"
    garment_photo().save(photo)
    r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "predict", str(photo), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["label"] in fe.pretrained().classes and np.isclose(sum(answer["probabilities"].values()), 1)
    r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "export", "--onnx", str(tmp_path / "m.onnx")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (tmp_path / "m.onnx").is_file(), r.stderr


def test_ship_model_writes_a_loadable_folder_and_a_card_from_its_run(tiny_run, tmp_path, monkeypatch):
    """scripts/ship_model.py on a finished run, into a temporary folder in place of the package's: the folder loads
    and predicts as the run does, and the card quotes the run's numbers and, given a --seeds study, its means."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "scripts"))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tiny_run.parent / "data"))
    import ship_model

    monkeypatch.setattr(ship_model, "PRETRAINED", tmp_path / "pretrained")
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    profile = metrics["profile"]
    summary = {"profile": profile, "seeds": [0, 1],
               "models": {"ann": {"accuracy": {"mean": 0.5, "std": 0.01}}, "cnn": {"accuracy": {"mean": 0.25,
                                                                                                "std": 0.02}}}}
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "summary.json").write_text(json.dumps(summary))
    assert ship_model.main(str(tiny_run), str(tmp_path / "study")) == 0
    shipped = tmp_path / "pretrained"
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(fe.load(shipped).predict_proba(images), fe.load(tiny_run).predict_proba(images),
                               atol=2e-3)  # fp16 weights where they change no test prediction
    card = (shipped / "MODEL_CARD.md").read_text()
    assert f"{metrics['models']['ensemble']['accuracy']:.4f}" in card
    assert "Over 2 seeds (0, 1) the same profile gave test accuracy ann 0.5000 ± 0.0100, cnn 0.2500 ± 0.0200." in card
    summary["profile"] = "not-" + profile  # a study of another profile is refused before anything is written
    (tmp_path / "study" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match="the --seeds study is of profile"):
        ship_model.main(str(tiny_run), str(tmp_path / "study"))
    assert ship_model.main(str(tiny_run)) == 0  # without a study: the card points to the documentation
    assert "results over several seeds: README.md" in (shipped / "MODEL_CARD.md").read_text()
