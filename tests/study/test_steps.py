"""The study's named steps, each called alone: train the members → fit the ensemble → score → the run folder; and
the owners they rely on (RunFolder, the one TTA + temperature, the training state, the device and session)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fashion_ensemble as fe
from fashion_ensemble.config import resolve
from fashion_ensemble.data.split import make_split
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.ensemble import tune_weights
from fashion_ensemble.model.probabilities import member_proba, softmax, temperature_scale
from fashion_ensemble.model.runs import RunFolder, default_path
from fashion_ensemble.study.pipeline import run_facts, train_members
from fashion_ensemble.study.scoring import predict, score
from fashion_ensemble.training import distributed
from fashion_ensemble.training.checkpoint import TrainState
from helpers import smoke_config, write_config, write_dataset


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """The steps by hand on tiny data: trained members, fitted on validation."""
    root = tmp_path_factory.mktemp("steps")
    cfg = smoke_config()
    split = make_split(cfg.data, write_dataset(root / "data"))
    folder = RunFolder(root / "run")
    folder.start(cfg)
    ensemble, history, timing = train_members(cfg, split, folder, torch.device("cpu"), progress=False)
    assert set(history) == {"ann", "cnn"} and set(timing) == {"train_ann_s", "train_cnn_s"}
    val = predict(ensemble, *split.val)
    return cfg, split, folder, ensemble, val


def test_fit_owns_temperatures_and_weights(steps):
    cfg, split, _, ensemble, val = steps
    assert all(m.temperature == 1.0 for m in ensemble.members.values())  # trained, not fitted
    ensemble.fit(val.raw, val.labels, calibrate=True, weighting="tuned")
    assert all(m.temperature != 1.0 for m in ensemble.members.values())
    assert sum(ensemble.weights.values()) == pytest.approx(1.0)
    ensemble.fit(val.raw, val.labels, calibrate=False, weighting="equal")  # fit again: undone, not stacked
    assert all(m.temperature == 1.0 for m in ensemble.members.values())
    assert ensemble.weights == {"ann": 0.5, "cnn": 0.5}
    ensemble.fit(val.raw, val.labels, calibrate=True, weighting="log_loss")
    expected = tune_weights([m.calibrate(val.raw[n]) for n, m in ensemble.members.items()], val.labels,
                            criterion="log_loss")
    assert list(ensemble.weights.values()) == pytest.approx(expected.tolist())
    with pytest.raises(UserError, match="unknown weighting 'best'"):
        ensemble.fit(val.raw, val.labels, weighting="best")


def test_score_is_the_study_s_metrics_from_probabilities_alone(steps):
    cfg, split, folder, ensemble, val = steps
    ensemble.fit(val.raw, val.labels, calibrate=True, weighting="tuned")
    test = predict(ensemble, *split.test)
    scores = score(ensemble, test, val)
    assert list(scores) == ["val_accuracy", "models", "significance", "top_errors", "test_errors", "calibration",
                            "alternatives"]
    y = split.test[1]
    for name, member in ensemble.members.items():  # members scored with their temperatures: what they vote with
        proba = member.predict_proba(split.test[0])
        assert scores["models"][name]["accuracy"] == (proba.argmax(1) == y).mean()
        # calibration scores a member from its raw outputs: refit, its temperature is the one it votes with
        assert scores["calibration"][name]["temperature"] == pytest.approx(member.temperature, rel=1e-6)
    assert scores["models"]["ensemble"]["accuracy"] == (ensemble.predict(split.test[0]) == y).mean()
    assert "uncalibrated_ensemble_tuned_weights" in scores["alternatives"]
    assert list(score(ensemble, test)) == ["models", "significance"]  # without validation: test scores only
    facts = run_facts(cfg, split, ensemble)
    assert facts["temperatures"] == {n: m.temperature for n, m in ensemble.members.items()}


def test_the_run_folder_has_one_owner(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert RunFolder(tmp_path / ".run.partial").path == folder.path  # either name, the same folder
    assert folder.partial == tmp_path / ".run.partial"
    assert not folder.is_partial() and not folder.is_complete() and folder.current == folder.path
    cfg = smoke_config()
    folder.start(cfg)
    assert folder.is_partial() and folder.current == folder.partial and folder.config() == cfg
    assert folder.checkpoint("ann") == folder.partial / "checkpoints" / "ann.safetensors"
    folder.write_metrics({"models": {}})
    folder.write_history({"ann": {}}, {"total_s": 1.5})
    assert folder.complete() == folder.path
    assert folder.is_complete() and not folder.is_partial() and folder.history()["timing"]["total_s"] == 1.5
    name = default_path(cfg).name
    assert name.startswith("smoke-standard-seed0-") and default_path(cfg, seeds="seeds0-2", prefix="ablation-").name \
        .startswith("ablation-smoke-standard-seeds0-2-")


def test_the_member_the_onnx_graph_and_bench_share_one_tta_and_temperature():
    rng = np.random.default_rng(0)
    images = rng.random((6, 1, 4, 5)).astype(np.float32)
    weight = rng.standard_normal((20, 3)).astype(np.float32)

    def logits_np(x):  # any model: the mirror must change its logits
        return (np.asarray(x).reshape(len(x), -1) @ weight).astype(np.float64)

    def logits_torch(x):
        return x.reshape(len(x), -1) @ torch.from_numpy(weight)

    expected = (softmax(logits_np(images)) + softmax(logits_np(images[..., ::-1]))) / 2
    expected = temperature_scale(expected, 0.7)
    assert np.allclose(expected.sum(1), 1.0, atol=1e-12)
    x = torch.from_numpy(images)
    for one_call in (False, True):  # the PyTorch member calls twice; the ONNX graph once, on 2N images
        as_member = member_proba(lambda t: logits_np(t.numpy()), x, tta_flip=True, temperature=0.7, one_call=one_call)
        assert isinstance(as_member, np.ndarray) and np.allclose(as_member, expected, atol=1e-12)
        as_graph = member_proba(logits_torch, x, tta_flip=True, temperature=0.7, one_call=one_call)
        assert isinstance(as_graph, torch.Tensor) and np.allclose(as_graph.numpy(), expected, atol=1e-6)


def test_bench_eager_path_votes_as_predict_proba(tiny_run):
    from fashion_ensemble.tools.bench import eager_proba

    ensemble = fe.load(tiny_run)  # calibrated members, one with flip TTA
    images = np.random.default_rng(1).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(eager_proba(ensemble, images), ensemble.predict_proba(images), atol=1e-5)


@pytest.mark.slow
def test_using_a_model_imports_no_training(tiny_run, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import fashion_ensemble as fe
        from fashion_ensemble.serving import predict
        from fashion_ensemble.serving import serve
        from fashion_ensemble.serving.export import export_onnx
        model = fe.load({str(tiny_run)!r})
        model.predict_proba(np.zeros((2, 28, 28), np.uint8))
        export_onnx(model, {str(tmp_path / "m.onnx")!r})
        serve.create_app({str(tiny_run)!r})
        loaded = [m for m in sys.modules if m.startswith(("fashion_ensemble.training", "fashion_ensemble.data",
                                                          "fashion_ensemble.study", "sklearn"))]
        print(loaded)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_training_state_is_typed_and_checkpointed(tmp_path, tiny_data):
    from fashion_ensemble.members import build_model
    from fashion_ensemble.training.checkpoint import load_checkpoint, save_checkpoint

    cfg = smoke_config().members["ann"]
    model = build_model(cfg.kind, cfg.model)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = TrainState(next_epoch=3, stopped=True, best_loss=0.25, bad_epochs=1, history=[{"epoch": 1}, {"epoch": 2}])
    save_checkpoint(tmp_path / "c.safetensors", model=model, best_state=None, optimizer=opt, scheduler=sched,
                    generator=torch.Generator(), state=state)
    _, back = load_checkpoint(tmp_path / "c.safetensors", model=model, optimizer=opt, scheduler=sched,
                              generator=torch.Generator())
    assert back == state


def test_device_and_session_are_opened_in_one_place():
    assert distributed.start("cpu") == distributed.start("cpu") == torch.device("cpu")
    assert distributed.world() == (0, 1)  # no torchrun: no process group
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        distributed.resolve_device("tpu")


def test_config_precedence_lives_in_config(tmp_path):
    path = write_config(tmp_path / "c.json", fe.profile("quick", seed=7))
    assert resolve(config_file=path).seed == 7  # a file keeps its seed
    assert resolve(config_file=path, seed=2, overrides=["seed=4"]).seed == 4  # --set over --seed over the file
    assert resolve(default_profile="quick").profile == "quick"
    with pytest.raises(UserError, match="drop --profile"):
        resolve(config_file=path, profile_name="default")
