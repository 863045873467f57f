"""Several seeds: full runs, mean ± std (hand-checked against the runs' own metrics), restartable."""

import json
import subprocess
import sys

import numpy as np
import pytest

import fashion_ensemble as fe
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.runs import RunFolder
from fashion_ensemble.study.seeds import run_seeds
from helpers import resume_config, write_dataset


@pytest.mark.slow
def test_two_seeds_summary_and_restart(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=600, n_test=100)
    out = run_seeds(resume_config(), [0, 1], tmp_path / "study", data_dir=data, device="cpu", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["seed0", "seed1", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    per_seed = [json.loads((out / f"seed{s}" / "metrics.json").read_text()) for s in (0, 1)]
    for name in ("ann", "cnn", "ensemble"):
        values = [m["models"][name]["macro_f1"] for m in per_seed]
        stat = summary["models"][name]["macro_f1"]
        assert stat["values"] == values
        assert stat["mean"] == pytest.approx(sum(values) / 2)
        assert stat["std"] == pytest.approx(abs(values[0] - values[1]) / np.sqrt(2))  # sample std of two values
    assert "± " in (out / "summary.md").read_text()

    stamp = (out / "seed0" / "metrics.json").stat().st_mtime_ns
    run_seeds(resume_config(), [0, 1], out, data_dir=data, device="cpu", progress=False)  # both done: skipped
    assert (out / "seed0" / "metrics.json").stat().st_mtime_ns == stamp

    assert fe.revote(out, weighting="equal", data_dir=data, device="cpu") == [out / "seed0", out / "seed1"]
    summary = json.loads((out / "summary.json").read_text())  # written again from the revoted seeds
    assert summary["weights"] == [{"ann": 0.5, "cnn": 0.5}] * 2
    assert summary["models"]["ensemble"]["accuracy"]["values"] == \
        [json.loads((out / f"seed{s}" / "metrics.json").read_text())["models"]["ensemble"]["accuracy"] for s in (0, 1)]


def test_seeds_must_differ(tmp_path):
    with pytest.raises(UserError, match="two or more different seeds"):
        run_seeds(resume_config(), [3, 3], tmp_path / "x")


@pytest.mark.slow
def test_cli_seeds(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=400, n_test=100)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(resume_config().to_dict()))
    r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "run", "--config", str(cfg), "--seeds", "2",
                        "--seed", "5", "--data-dir", str(data), "--out", str(tmp_path / "s"), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "mean over 2 seeds" in r.stdout and (tmp_path / "s" / "seed6" / "report.md").is_file()


def test_the_report_says_in_words_whether_the_ensemble_beat_each_member():
    from fashion_ensemble.study.report import seeds_verdict, verdict

    def s(won, lost, p):
        return {"a_right_b_wrong": won, "a_wrong_b_right": lost, "p_value": p}

    assert verdict("cnn", s(40, 10, 1e-5)).startswith("- **The ensemble beat cnn**: right on 40 test images")
    assert "not significantly" in verdict("cnn", s(12, 10, 0.83))
    assert "a tie" in verdict("cnn", s(10, 10, 1.0))
    assert "it was worse" in verdict("cnn", s(8, 30, 4e-4)) and "significant" in verdict("cnn", s(8, 30, 4e-4))
    assert seeds_verdict("ann", {"p_values": [1e-9, 1e-8], "ahead": [1, 1]}).endswith("in every seed.")
    assert "in 1 of 3 seeds, **not in the other 2** (behind it in 1)" in seeds_verdict(
        "cnn", {"p_values": [0.01, 0.4, 0.8], "ahead": [1, 1, -1]})
    assert "in 1 of 2 seeds" in seeds_verdict("cnn", {"p_values": [0.01, 0.4]})  # a summary from before "ahead"


@pytest.mark.slow
def test_train_starts_keeps_resumes_and_refuses_like_the_cli(tmp_path, tiny_data, monkeypatch):
    from helpers import smoke_config, write_config

    def full_disk(*args):
        raise OSError("no space left on device")

    out = tmp_path / "run"
    cfg_file = write_config(tmp_path / "c.json", smoke_config())
    options = dict(data_dir=tiny_data, device="cpu", progress=False)
    monkeypatch.setattr("fashion_ensemble.study.pipeline.write_report", full_disk)
    with pytest.raises(OSError):  # stopped after training: its checkpoints stay
        fe.train(cfg_file, out, **options)  # a config file, as `run --config`
    monkeypatch.undo()
    assert RunFolder(out).is_partial()
    assert fe.train(smoke_config(), out, **options) == out and RunFolder(out).is_complete()  # resumed
    stamp = (out / "metrics.json").stat().st_mtime_ns
    assert fe.train(smoke_config(), out, **options) == out  # complete: kept, nothing trained
    assert (out / "metrics.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="holds a complete run of another configuration"):
        fe.train(smoke_config().replace(seed=1), out, **options)


def test_the_old_ways_in_still_work_and_say_what_replaces_them():
    for name in ("run_study", "resume_study", "run", "run_seeds"):
        with pytest.warns(DeprecationWarning, match="use fe.train"):
            assert callable(getattr(fe, name))
    assert "train" in dir(fe) and "run_study" not in fe.__all__
