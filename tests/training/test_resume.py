"""Nothing lost: a run killed with SIGKILL at a random point of its training, then resumed, ends exactly where an
uninterrupted run with the same seed ends (weights and metrics.json, byte for byte); checkpoints hold the whole
training state."""

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fashion_ensemble.config import ANNConfig, CNNConfig, TrainConfig
from fashion_ensemble.errors import UserError
from fashion_ensemble.members import build_model
from fashion_ensemble.study.pipeline import run_study
from fashion_ensemble.training.trainer import train_member
from helpers import resume_config, stopping_cli, wait_until_stopped, write_dataset


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "fashion_ensemble.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def same_run(a, b):
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    assert (a / "ensemble.json").read_bytes() == (b / "ensemble.json").read_bytes()
    for name in ("ann", "cnn"):
        wa, wb = load_file(str(a / f"{name}.safetensors")), load_file(str(b / f"{name}.safetensors"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    ha, hb = (json.loads((d / "history.json").read_text())["members"] for d in (a, b))
    for name in ("ann", "cnn"):  # the same epochs with the same losses; only the timings differ
        timings = ("seconds", "images_per_s", "wall_s")
        strip = [{k: v for k, v in e.items() if k not in timings} for e in ha[name]["epochs"]]
        assert strip == [{k: v for k, v in e.items() if k not in timings} for e in hb[name]["epochs"]]


@pytest.mark.slow
def test_sigkill_at_a_random_point_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=2000, n_test=200)
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(resume_config().to_dict()))
    common = ["--config", str(cfg_file), "--data-dir", str(data), "--device", "cpu", "--quiet"]

    whole = cli("run", *common, "--out", str(tmp_path / "whole"))
    assert whole.wait(600) == 0, whole.stderr.read()

    # Somewhere in training, chosen by what the run does (a member, an epoch, before or after its checkpoint is
    # saved), not by a time: the uninterrupted run says how many epochs each member ran.
    h = json.loads((tmp_path / "whole" / "history.json").read_text())
    member = random.choice(["ann", "cnn"])
    epoch = random.randint(1, len(h["members"][member]["epochs"]))
    when = random.choice(["before", "after"])
    killed = stopping_cli(f"checkpoint:{member}:{epoch}:{when}", "run", *common, "--out", str(tmp_path / "killed"))
    wait_until_stopped(killed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(60) == -signal.SIGKILL
    assert not (tmp_path / "killed").exists()  # nothing that looks complete
    checkpoints = tmp_path / ".killed.partial" / "checkpoints"
    saved = sorted(p.name for p in checkpoints.iterdir()) if checkpoints.is_dir() else []

    resumed = cli("run", "--resume", str(tmp_path / "killed"), "--data-dir", str(data), "--device", "cpu", "--quiet")
    assert resumed.wait(600) == 0, resumed.stderr.read()
    print(f"killed {when} {member}'s checkpoint of epoch {epoch}; checkpoints then: {saved}")
    same_run(tmp_path / "whole", tmp_path / "killed")
    h = json.loads((tmp_path / "killed" / "history.json").read_text())  # timing counts the killed process's epochs
    for name in ("ann", "cnn"):
        assert h["timing"][f"train_{name}_s"] >= sum(e["wall_s"] for e in h["members"][name]["epochs"])
    assert h["timing"]["total_s"] >= h["timing"]["train_ann_s"] + h["timing"]["train_cnn_s"]
    assert not (tmp_path / ".killed.partial").exists() and not (tmp_path / "killed" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"ema_decay": 0.9}, {"lookahead_k": 3, "bn_frozen_scale": True,
                                                              "bn_bias_lr": 4.0}], ids=["plain", "ema", "lookahead"])
def test_resume_from_every_epoch_gives_the_same_weights(tmp_path, tiny_data, options):
    """In process: stop after epoch k (by copying the checkpoint then), resume, compare with the whole run."""
    from helpers import synthetic_images

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    train, val = (synthetic_images(y[:500]), y[:500]), (synthetic_images(y[500:], seed=1), y[500:])
    cfg = TrainConfig(epochs=4, batch_size=50, patience=10, **options)
    mcfg = CNNConfig(stem=8, stages=((8,), (16,)))

    def fresh():
        torch.manual_seed(1)
        return build_model("cnn", mcfg)

    whole, hist = train_member(fresh(), train, val, cfg, seed=3, progress=False)
    ckpt = tmp_path / "ck.safetensors"
    snapshots = []

    import fashion_ensemble.training.trainer as train_mod

    real_save = train_mod.save_checkpoint

    def save_and_copy(path, **kw):
        real_save(path, **kw)
        snapshots.append(path.read_bytes())

    train_mod.save_checkpoint = save_and_copy
    try:
        train_member(fresh(), train, val, cfg, seed=3, progress=False, checkpoint=ckpt)
    finally:
        train_mod.save_checkpoint = real_save
    assert len(snapshots) == 4
    for k, snapshot in enumerate(snapshots[:-1], start=1):
        ckpt.write_bytes(snapshot)  # as if killed right after epoch k
        resumed, rhist = train_member(fresh(), train, val, cfg, seed=3, progress=False, checkpoint=ckpt)
        for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
            assert torch.equal(a, b), (k, name)
        assert [e["val_loss"] for e in rhist] == [e["val_loss"] for e in hist]


def test_a_damaged_checkpoint_says_so(tmp_path):
    from helpers import synthetic_images

    y = np.arange(100) % 10
    ckpt = tmp_path / "ck.safetensors"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable training checkpoint"):
        train_member(build_model("ann", ANNConfig(hidden=(16,))), (synthetic_images(y), y), (synthetic_images(y), y),
                     TrainConfig(epochs=1), seed=0, progress=False, checkpoint=ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--resume", "X", "--seed", "3"], "drop --seed"),
    (["--resume", "/nonexistent/run"], "nothing to resume"),
    (["--config", "/nonexistent.json"], "no such file"),
    (["--config", "CFG", "--profile", "quick"], "drop --profile"),
    (["--resume", "X", "--set", "seed=3"], "drop --set"),
    (["--config", "CFG", "--set", "members.cnn.train.epochs=x"], "expected int, got 'x'"),
])
def test_resume_and_config_mistakes(tmp_path, args, message):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(resume_config().to_dict()))
    args = [str(cfg) if a == "CFG" else a for a in args]
    r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "run", *args], capture_output=True, text=True,
                       timeout=120, env={**os.environ})
    assert r.returncode == 2 and message in r.stderr, r.stderr


@pytest.mark.slow
def test_parallel_members_give_a_complete_run(tmp_path, capsys):

    data = write_dataset(tmp_path / "data", n_train=600, n_test=100)
    out = run_study(resume_config(), tmp_path / "par", data_dir=data, device="cpu", progress=True, parallel=True)
    said = capsys.readouterr().out
    cores = os.cpu_count() or 1
    assert ("in parallel: 2 processes" in said) == (cores >= 2), said
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["ensemble"]["accuracy"] > 0.5
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=2000, n_test=200)
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(resume_config().to_dict()))
    out = tmp_path / "run"
    # SIGINT as a terminal sends it: a child inherits an ignored SIGINT (a suite started in the background, or
    # by a tool that ignores it), and Python then installs no KeyboardInterrupt handler at all.
    run = stopping_cli("checkpoint:ann:1:after", "run", "--config", str(cfg_file), "--data-dir", str(data),
                       "--device", "cpu", "--quiet", "--out", str(out),
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_until_stopped(run)  # training is under way: the ANN's first epoch is saved
    run.send_signal(signal.SIGINT)
    run.send_signal(signal.SIGCONT)
    assert run.wait(60) == 130
    err = run.stderr.read().strip().splitlines()
    assert err[-1].startswith("fashion-ensemble: interrupted; the run is saved up to its last finished epoch in ")
    assert err[-1].endswith(f"go on with: fashion-ensemble run --resume {out}")
