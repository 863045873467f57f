"""The whole study on tiny synthetic data: the run folder's files, `load`, `evaluate`, and bad run folders."""

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import fashion_ensemble as fe
from fashion_ensemble.config import EnsembleConfig, map_members
from fashion_ensemble.errors import UserError
from fashion_ensemble.study.pipeline import resume_study, run_study
from helpers import copy_run, write_dataset
from helpers import smoke_config as tiny_config

RUN_FILES = ["config.json", "ann.safetensors", "cnn.safetensors", "ensemble.json", "history.json", "metrics.json",
             "report.md", "training_curves.png", "confusion_matrices.png", "per_class_f1.png", "reliability.png"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    data_dir = write_dataset(root / "data")
    out = run_study(tiny_config(), root / "run", data_dir=data_dir, device="cpu", progress=False)
    return out, data_dir


def test_run_folder_holds_every_file(run):
    out, _ = run
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".*partial"))


def test_metrics_json_contract(run):
    out, _ = run
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"] == "standard" and m["seed"] == 0
    assert set(m["models"]) == {"ann", "cnn", "ensemble"}
    for scores in m["models"].values():
        for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
            assert 0.0 <= scores[key] <= 1.0
        assert len(scores["per_class"]) == 10
        lo, hi = scores["accuracy_ci95"]
        assert lo <= scores["accuracy"] <= hi
        assert 0.0 <= scores["ece"] <= 1.0
        assert np.array(scores["confusion_matrix"]).sum() == 100
    assert m["models"]["ensemble"]["accuracy"] > 0.5  # synthetic bars are easy: learning happened
    for name in ("ann", "cnn"):
        s = m["significance"][f"ensemble_vs_{name}"]
        assert s["both_right"] + s["a_right_b_wrong"] + s["a_wrong_b_right"] + s["both_wrong"] == 100
        assert 0.0 <= s["p_value"] <= 1.0
    for name in ("ann", "cnn"):  # the smoke profile calibrates: a member's "before" is its raw output, its "after"
        c = m["calibration"][name]  # what it votes with (its own temperature, refit on the same validation split)
        assert c["temperature"] == pytest.approx(m["temperatures"][name], rel=1e-4)
        assert c["ece_scaled"] == pytest.approx(m["models"][name]["ece"], abs=1e-6)
    h = json.loads((out / "history.json").read_text())
    first = h["members"]["cnn"]["epochs"][0]
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr", "augmented"} <= set(first)
    assert [e["augmented"] for e in h["members"]["ann"]["epochs"]] == [True, False]  # augmentation: epoch 1 only
    report = (out / "report.md").read_text()
    assert "paper" in report and "Per-class F1" in report and "T-shirt/top" in report and "McNemar" in report


def test_load_reproduces_the_metrics_exactly(run):
    out, data_dir = run
    metrics = json.loads((out / "metrics.json").read_text())
    model = fe.load(out)
    assert model.classes == list(fe.CLASSES) and set(model.members) == {"ann", "cnn"}
    cfg = fe.RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    x_te, y_te = fe.make_split(cfg.data, data_dir).test
    proba = model.predict_proba(x_te)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    assert (proba.argmax(1) == y_te).mean() == metrics["models"]["ensemble"]["accuracy"]
    for name, member in model.members.items():
        assert (member.predict_proba(x_te).argmax(1) == y_te).mean() == metrics["models"][name]["accuracy"]
    again = fe.evaluate(out, data_dir=data_dir, device="cpu")
    assert again["ensemble"]["accuracy"] == metrics["models"]["ensemble"]["accuracy"]


@pytest.mark.slow
def test_same_seed_same_metrics(run, tmp_path):
    out, data_dir = run
    second = run_study(tiny_config(), tmp_path / "again", data_dir=data_dir, device="cpu", progress=False)
    assert (second / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()


def test_existing_folder_is_not_overwritten(run):
    out, data_dir = run
    with pytest.raises(UserError, match="already exists"):
        run_study(tiny_config(), out, data_dir=data_dir, device="cpu", progress=False)


@pytest.mark.slow
def test_failed_run_leaves_no_folder_that_looks_complete_and_can_be_resumed(tmp_path, tiny_data, monkeypatch):
    def broken_report(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr("fashion_ensemble.study.pipeline.write_report", broken_report)  # fails after training
    with pytest.raises(RuntimeError, match="disk full"):
        run_study(tiny_config(), tmp_path / "run", data_dir=tiny_data, device="cpu", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.partial", "data"]  # hidden, kept for --resume
    assert {p.name for p in (tmp_path / ".run.partial" / "checkpoints").iterdir()} == {
        "ann.safetensors", "cnn.safetensors", "split.json"}  # each member's state, and the data it trains on
    monkeypatch.undo()
    out = resume_study(tmp_path / "run", data_dir=tiny_data, device="cpu", progress=False)
    assert (out / "report.md").is_file() and not (out / "checkpoints").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]


def test_resume_needs_something_to_resume(run, tmp_path):
    out, data_dir = run
    with pytest.raises(UserError, match="is complete"):
        resume_study(out, data_dir=data_dir, device="cpu")
    with pytest.raises(UserError, match="nothing to resume"):
        resume_study(tmp_path / "never", data_dir=data_dir, device="cpu")


def flat(tree, path="") -> dict:
    """A JSON tree as {"a/b/0": leaf}."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        return {path: tree}
    return {k: v for key, sub in items for k, v in flat(sub, f"{path}/{key}").items()}


@pytest.mark.slow
def test_revote_writes_what_a_run_with_that_weighting_writes(run, tmp_path):
    out, data_dir = run
    copy = copy_run(out, tmp_path / "copy")
    assert fe.revote(copy, weighting="log_loss", calibrate=False, data_dir=data_dir, device="cpu") == [copy]
    cfg = tiny_config()
    fresh = run_study(cfg.replace(ensemble=EnsembleConfig(weights="log_loss", calibrate=False)), tmp_path / "fresh",
                         data_dir=data_dir, device="cpu", progress=False)
    for name in ("config.json", "ensemble.json"):
        assert (copy / name).read_text() == (fresh / name).read_text(), name
    metrics = json.loads((copy / "metrics.json").read_text())
    # The same up to rounding: the fresh run fits on its members as trained, the revote on them as loaded (a
    # temperature at the edge of its search moves in the ninth digit).
    ours, theirs = flat(metrics), flat(json.loads((fresh / "metrics.json").read_text()))
    assert ours.keys() == theirs.keys()
    assert all(v == (pytest.approx(theirs[k], rel=1e-6) if type(v) is float else theirs[k]) for k, v in ours.items())
    assert metrics["weighting"] == "log_loss" and set(metrics["temperatures"].values()) == {1.0}
    assert metrics["weights"] == metrics["alternatives"]["log_loss_weights"]
    assert json.loads((out / "metrics.json").read_text())["weighting"] == "tuned"  # the original is untouched
    assert (copy / "ann.safetensors").read_bytes() == (out / "ann.safetensors").read_bytes()
    history = json.loads((copy / "history.json").read_text())
    assert history["revoted"][0]["from"] == {"weights": "tuned", "calibrate": True}
    assert history["members"] == json.loads((out / "history.json").read_text())["members"]
    assert "Ensemble weighting: **log_loss** (ann " in (copy / "report.md").read_text()
    assert ": fit on validation log-loss). Equal weights give" in (copy / "report.md").read_text()
    assert fe.evaluate(copy, data_dir=data_dir, device="cpu")["ensemble"]["accuracy"] == \
        metrics["models"]["ensemble"]["accuracy"]  # `load` reproduces the new vote


@pytest.mark.slow
def test_revote_with_shift_tta_writes_what_a_run_with_it_writes(run, tmp_path):
    """TTA changes no training, so a finished run revoted with shift TTA is the run a config with it makes."""
    out, data_dir = run
    copy = copy_run(out, tmp_path / "copy")
    fe.revote(copy, tta_shift=1, data_dir=data_dir, device="cpu")
    cfg = tiny_config()
    fresh = run_study(map_members(cfg, lambda m: dataclasses.replace(m, tta_shift=1)), tmp_path / "fresh",
                         data_dir=data_dir, device="cpu", progress=False)
    assert (copy / "config.json").read_text() == (fresh / "config.json").read_text()
    for name in ("ensemble.json", "metrics.json"):  # up to rounding: fit on members as trained against as loaded
        ours, theirs = (flat(json.loads((folder / name).read_text())) for folder in (copy, fresh))
        assert ours.keys() == theirs.keys()
        assert all(v == (pytest.approx(theirs[k], rel=1e-6) if type(v) is float else theirs[k])
                   for k, v in ours.items()), name
    assert all(m.tta_shift == 1 for m in fe.load(copy).members.values())
    assert "views (the image and it moved 1 pixel each way" in (copy / "report.md").read_text()
    assert "moved" not in (out / "report.md").read_text()
    history = json.loads((copy / "history.json").read_text())
    assert history["revoted"][0]["tta_shift"] == {n: [0, 1] for n in cfg.members}


def test_revote_refuses_what_it_cannot_vote(run, tmp_path):
    out, data_dir = run
    with pytest.raises(UserError, match="ensemble.weights must be one of"):
        fe.revote(out, weighting="median", data_dir=data_dir, device="cpu")
    with pytest.raises(UserError, match="tta_shift"):
        fe.revote(out, tta_shift=-1, data_dir=data_dir, device="cpu")
    with pytest.raises(UserError, match="not a complete run folder"):
        fe.revote(tmp_path / "never", data_dir=data_dir, device="cpu")


def test_load_errors_name_the_problem(run, tmp_path):
    out, _ = run
    with pytest.raises(UserError, match="does not exist"):
        fe.load(tmp_path / "nothing")

    missing = copy_run(out, tmp_path / "missing")
    (missing / "cnn.safetensors").unlink()
    with pytest.raises(UserError, match="cnn.safetensors is missing"):
        fe.load(missing)

    wrong = copy_run(out, tmp_path / "wrong")
    state = {"normalize.mean": torch.zeros(()), "normalize.std": torch.ones(())}
    save_file(state, str(wrong / "ann.safetensors"))
    with pytest.raises(UserError, match="do not match the model"):
        fe.load(wrong)

    from safetensors.torch import load_file
    shape = copy_run(out, tmp_path / "shape")
    state = load_file(str(shape / "ann.safetensors"))
    key = next(k for k, v in state.items() if v.ndim == 2)
    state[key] = torch.zeros(3, 3)
    save_file(state, str(shape / "ann.safetensors"))
    with pytest.raises(UserError, match=f"{key} has shape"):
        fe.load(shape)

    pickled = copy_run(out, tmp_path / "pickled")
    (pickled / "ann.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UserError, match="not a safetensors file"):
        fe.load(pickled)

    no_config = copy_run(out, tmp_path / "noconfig")
    (no_config / "config.json").unlink()
    with pytest.raises(UserError, match="config.json is missing"):
        fe.load(no_config)


@pytest.mark.slow
def test_tensorboard_logs_when_asked(tmp_path, tiny_data):
    pytest.importorskip("tensorboard")
    out = run_study(tiny_config(), tmp_path / "tb", data_dir=tiny_data, device="cpu", progress=False,
                       tensorboard=True)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_the_report_says_where_with_what_and_how_long(tiny_run):
    import torch

    env = json.loads((tiny_run / "history.json").read_text())["environment"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["cpu"] and env["cpu_threads"] >= 1
    report = (tiny_run / "report.md").read_text()
    assert "## Environment" in report and f"PyTorch {torch.__version__}" in report and "- Wall time: " in report


def test_the_weighting_sentence_does_not_repeat_itself():
    from fashion_ensemble.study.report import _weighting

    same = {"tuned_weights": {"ann": 0.5, "cnn": 0.5}, "ensemble_equal_weights": {"accuracy": 0.9},
            "ensemble_tuned_weights": {"accuracy": 0.9}}
    assert _weighting(same) == "Tuned on validation accuracy, the weights stayed equal: accuracy 0.9000."
    tuned = {**same, "tuned_weights": {"ann": 0.4, "cnn": 0.6}, "ensemble_tuned_weights": {"accuracy": 0.91}}
    assert "(ann 0.40, cnn 0.60) give 0.9100" in _weighting(tuned) and "log-loss" not in _weighting(tuned)
    both = {**tuned, "log_loss_weights": {"ann": 0.15, "cnn": 0.85}, "ensemble_log_loss_weights": {"accuracy": 0.92}}
    assert _weighting(both).endswith("Weights fit on validation log-loss (ann 0.15, cnn 0.85) give 0.9200.")
    assert "log-loss" not in _weighting(both, "log_loss")  # the run votes with them: the sentence before says so


def test_the_report_shows_the_most_confident_mistakes(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    errors, every = metrics["top_errors"], metrics["test_errors"]
    assert len(every) == metrics["models"]["ensemble"]["errors"] and errors == every[:16]
    assert [e["origin"] for e in every] == [f"t10k-images-idx3-ubyte.gz[{e['index']}]" for e in every]
    assert len(errors) <= 16 and all(e["true"] != e["predicted"] for e in errors)
    assert [e["confidence"] for e in errors] == sorted((e["confidence"] for e in errors), reverse=True)
    assert bool(errors) == (tiny_run / "misclassified.png").is_file()
    assert bool(errors) == ("misclassified.png" in (tiny_run / "report.md").read_text())
