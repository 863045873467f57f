"""The model that ships with the package: it loads with no run folder, every command uses it, and it reproduces the
accuracy its card states on the real test set."""

import json
import subprocess
import sys

import numpy as np

import fashion_ensemble as fe
from fashion_ensemble.data import load_raw
from fashion_ensemble.runs import PRETRAINED
from helpers import garment_photo


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
