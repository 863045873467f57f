"""The "I don't know" signal (ood.py): its distance against a hand-written oracle, its calibration on validation,
its file, and its place in every prediction (Python, records for the CLI and HTTP, metrics, older folders)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fashion_ensemble as fe
from fashion_ensemble.errors import UserError
from fashion_ensemble.model import ood
from fashion_ensemble.serving.predict import records
from helpers import synthetic_images


def gaussian_features(n: int, seed: int, classes: int = 3, dim: int = 8):
    """Three well-separated Gaussian clusters in 8 dimensions, with their labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = np.eye(classes, dim) * 6.0
    return centres[y] + rng.normal(size=(n, dim)) * np.linspace(0.5, 2.0, dim), y


def test_distance_is_the_smallest_class_mahalanobis_distance():
    f, y = gaussian_features(500, 0)
    stats = ood.fit_member(f, y, f)
    queries = np.random.default_rng(1).normal(size=(20, 8)) * 3
    cov = np.cov((f - stats.means[y]).T, bias=True)
    cov += ood.RIDGE * np.trace(cov) / len(cov) * np.eye(len(cov))
    inv = np.linalg.inv(cov)
    expected = [min((q - m) @ inv @ (q - m) for m in stats.means) for q in queries]
    np.testing.assert_allclose(stats.distance(queries), expected, rtol=1e-8)


def test_validation_flags_the_flag_rate_and_far_points_are_flagged():
    f_train, y_train = gaussian_features(2000, 0)
    f_val, _ = gaussian_features(1000, 1)
    detector = ood.fit({"a": f_train, "b": f_train[:, :5]}, y_train, {"a": f_val, "b": f_val[:, :5]}, flag_rate=0.1)
    val_scores = detector.score({"a": f_val, "b": f_val[:, :5]})
    assert 0 <= val_scores.min() and val_scores.max() < 1
    assert detector.flags(val_scores).mean() == pytest.approx(0.1, abs=0.002)  # by construction
    far = np.full((5, 8), 30.0)
    far_scores = detector.score({"a": far, "b": far[:, :5]})
    assert (far_scores == 1.0).all() and detector.flags(far_scores).all()
    f_test, _ = gaussian_features(1000, 2)  # new draws from the training distribution
    assert detector.flags(detector.score({"a": f_test, "b": f_test[:, :5]})).mean() == pytest.approx(0.1, abs=0.03)


def test_rates_by_hand():
    scores = np.array([0.1, 0.99, 0.97, 0.5, 0.96])
    correct = np.array([True, True, False, False, True])
    r = ood.rates(scores, correct, flag_rate=0.05)  # flagged: 0.99, 0.97, 0.96
    assert r == {"flag_rate": 0.05, "flagged": 0.6, "correct_flagged": 2 / 3, "wrong_flagged": 0.5,
                 "accuracy_kept": 0.5, "accuracy_flagged": 2 / 3}


def test_the_file_round_trips_and_refuses_what_does_not_fit(tmp_path):
    f, y = gaussian_features(300, 0)
    detector = ood.fit({"ann": f}, y, {"ann": f[:100]}, flag_rate=0.02)
    detector.save(tmp_path / ood.FILE)
    width = f.shape[1]
    again = ood.Detector.load(tmp_path / ood.FILE, {"ann": width})
    assert again.flag_rate == 0.02
    np.testing.assert_allclose(again.score({"ann": f}), detector.score({"ann": f}), atol=0.02)
    with pytest.raises(UserError, match="no statistics for member 'cnn'.*fashion-ensemble ood"):
        ood.Detector.load(tmp_path / ood.FILE, {"ann": width, "cnn": 16})
    with pytest.raises(UserError, match=f"features are {width + 1} wide"):
        ood.Detector.load(tmp_path / ood.FILE, {"ann": width + 1})
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="not a readable"):
        ood.Detector.load(tmp_path / "bad.safetensors", {"ann": width})
    with pytest.raises(UserError, match="flag rate"):
        ood.fit({"ann": f}, y, {"ann": f}, flag_rate=1.5)


def test_a_run_has_the_signal_and_every_prediction_carries_it(tiny_run):
    assert (tiny_run / ood.FILE).is_file()
    ensemble = fe.load(tiny_run)
    garments = synthetic_images(np.arange(10))
    noise = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    assert ensemble.is_ood(noise).all()
    assert ensemble.ood_score(garments).mean() < ensemble.ood_score(noise).mean()
    proba, members, scores = ensemble.predict_with_ood(noise)
    np.testing.assert_array_equal(proba, ensemble.predict_proba(noise))
    np.testing.assert_array_equal(scores, ensemble.ood_score(noise))
    for rec in records(ensemble, noise):
        assert rec["ood"] is True and 0.95 < rec["ood_score"] <= 1.0
    rates = json.loads((tiny_run / "metrics.json").read_text())["ood"]
    assert rates["flag_rate"] == ood.FLAG_RATE and 0 <= rates["flagged"] <= 1
    assert f"On the test images it flagged {rates['flagged']:.1%}" in (tiny_run / "report.md").read_text()


@pytest.mark.slow
def test_an_older_folder_predicts_without_it_and_the_ood_command_adds_it(tiny_run, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(tiny_run, old)
    (old / ood.FILE).unlink()
    metrics = json.loads((old / "metrics.json").read_text())
    del metrics["ood"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    ensemble = fe.load(old)
    assert ensemble.ood is None
    rec = records(ensemble, synthetic_images(np.array([1])))[0]
    assert rec["ood"] is None and rec["ood_score"] is None
    with pytest.raises(UserError, match="fashion-ensemble ood"):
        ensemble.is_ood(synthetic_images(np.array([1])))
    onnx = fe.OnnxEnsemble(ensemble)  # its export has no ood output either
    assert onnx.ood is None and records(onnx, synthetic_images(np.array([1])))[0]["ood"] is None

    data_dir = tiny_run.parent / "data"
    out = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "ood", str(old), "--data-dir", str(data_dir),
                          "--device", "cpu", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads((old / "metrics.json").read_text())["ood"]
    # the same signal as the run fit: same draw of training images, same validation
    images = np.concatenate([synthetic_images(np.arange(10)), np.random.default_rng(0).integers(0, 256, (5, 28, 28),
                                                                                               dtype=np.uint8)])
    np.testing.assert_allclose(fe.load(old).ood_score(images), fe.load(tiny_run).ood_score(images), atol=0.03)


@pytest.mark.slow
def test_predict_cli_says_when_it_does_not_know(tiny_run, tmp_path):
    from helpers import png_bytes

    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    (tmp_path / "noise.png").write_bytes(png_bytes(noise))
    out = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "predict", str(tiny_run),
                          str(tmp_path / "noise.png")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "noise.png: unlike the training images (ood score" in out.stdout and "a guess" in out.stdout
