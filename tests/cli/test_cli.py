"""The real console script in a temporary folder: a smoke run on the real data, evaluate, data check, and errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import smoke_config, write_config, write_dataset


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.mark.slow
def test_smoke_run_then_evaluate_on_real_data(real_data, tmp_path):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "smoke.json", smoke_config(train_subset=2000, verify_checksums=True))
    r = cli("run", "--config", str(cfg), "--set", "members.ann.train.epochs=1", "--out", str(out), "--device", "cpu",
            "--quiet")
    assert r.returncode == 0, r.stderr
    assert "ensemble" in r.stdout and str(out) in r.stdout
    # --set reached training and the run folder's config records it
    assert json.loads((out / "config.json").read_text())["members"]["ann"]["train"]["epochs"] == 1
    assert len(json.loads((out / "history.json").read_text())["members"]["ann"]["epochs"]) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"]["sizes"] == {"train": 2000, "val": 6000, "test": 10000}
    assert metrics["models"]["ensemble"]["accuracy"] > 0.5
    r = cli("evaluate", str(out), "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ensemble"]["accuracy"] == metrics["models"]["ensemble"]["accuracy"]


@pytest.mark.slow
def test_data_check_on_real_data(real_data):
    r = cli("data", "check")
    assert r.returncode == 0, r.stderr
    assert "4 files OK" in r.stdout and "standard: train 54,000, val 6,000, test 10,000" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--data-dir", "/nonexistent", "--profile", "quick"], "does not exist"),
        (["evaluate", "/nonexistent/run"], "run folder /nonexistent/run does not exist"),
        (["data", "check", "--data-dir", "/nonexistent"], "apt-get install dataset-fashion-mnist"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(args, message):
    r = cli(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_option_is_rejected_by_argparse():
    r = cli("run", "--profile", "huge")
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_bad_synthetic_data_gets_a_clear_line(tmp_path):
    folder = write_dataset(tmp_path / "data")
    r = cli("run", "--profile", "quick", "--data-dir", str(folder), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "official release" in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bench_tiny_keeps_working(tiny_run, tiny_data):
    r = cli("bench", str(tiny_run), "--tiny", "--json", "--data-dir", str(tiny_data))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    for key in ("cnn_train_speedup", "ann_train_speedup", "cnn_train_mfu", "ensemble_infer_mfu",
                "ensemble_infer_img_s", "ensemble_latency_p50_ms", "ensemble_latency_p99_ms", "onnx_latency_p50_ms"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert set(result["time_to_accuracy_s"]) == {"ann", "cnn"}
    # the convolutions' ceiling: the CNN only (the ANN has none), and consistent with the rates above
    assert "ann_conv_ms_per_step" not in result and result["cnn_conv_ms_per_step"] > 0
    bound = result["cnn_conv_bound_train_img_s"]
    assert bound == pytest.approx(128e3 / result["cnn_conv_ms_per_step"], rel=1e-3)  # the default CNN's batch
    assert result["cnn_train_speedup_ceiling"] == pytest.approx(bound / result["cnn_baseline_train_img_s"], rel=1e-2)
    assert result["cnn_conv_bound_train_mfu"] == pytest.approx(
        result["cnn_train_mfu"] * bound / result["cnn_train_img_s"], rel=1e-2)
    windows = result["machine_peak_gflops_windows"]  # MFU over the best of three peak windows, not the first
    assert len(windows) == 3 and result["machine_peak_gflops"] == max(windows)
    r = cli("bench", "--tiny", "--data-dir", str(tiny_data))
    assert r.returncode == 0 and "speed-up" in r.stdout and "onnx" in r.stdout, r.stderr
    assert "convolutions alone" in r.stdout


@pytest.mark.slow
def test_the_gpu_check_runs_its_checks_and_a_study_on_the_cpu(tiny_data, tmp_path):
    """What CI can run of scripts/gpu_check.py: every check on the CPU, then a small study."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
    r = subprocess.run([sys.executable, str(script), "--device", "cpu", "--profile", "quick", "--data-dir",
                        str(tiny_data), "--set", "data.verify_checksums=false", "--set", "members.ann.train.epochs=1",
                        "--set", "members.cnn.train.epochs=1", "--time-limit", "none", "--out", str(tmp_path / "run"),
                        "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [c["check"] for c in report["checks"]][:3] == ["precision", "augmentation", "inference"]
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    assert set(report["study"]["test_accuracy"]) == {"ann", "cnn", "ensemble"}
    assert "PASS  augmentation" in r.stdout and "study `quick` on cpu" in r.stdout


@pytest.mark.slow
def test_small_things_a_newcomer_hits(tiny_run, tmp_path):
    import socket

    import fashion_ensemble
    from helpers import png_bytes

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"fashion-ensemble {fashion_ensemble.__version__}"
    blank = tmp_path / "blank.png"
    blank.write_bytes(png_bytes(np.full((40, 40), 255, np.uint8)))
    r = cli("predict", str(tiny_run), str(blank))
    assert r.returncode == 1 and f"skipped {blank}: the image is blank" in r.stderr
    with socket.socket() as s:  # a port in use: one line, exit 2
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = cli("serve", str(tiny_run), "--port", str(s.getsockname()[1]))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "choose another with --port" in r.stderr


@pytest.mark.slow
def test_revote_prints_the_new_vote_and_its_tests(tiny_run, tmp_path):
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    r = cli("revote", str(run), "--weighting", "equal", "--no-calibrate", "--data-dir", str(tiny_run.parent / "data"),
            "--device", "cpu")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["weights"] == {"ann": 0.5, "cnn": 0.5} and metrics["weighting"] == "equal"
    assert f"{run}: equal weights ann 0.50 / cnn 0.50; ensemble test accuracy " \
           f"{metrics['models']['ensemble']['accuracy']:.4f} (vs ann " in r.stdout
    r = cli("revote", str(tmp_path / "none"))
    assert r.returncode == 2 and "not a complete run folder" in r.stderr


@pytest.mark.slow
def test_vote_runs_reproduces_the_runs_own_vote(tiny_run, tmp_path):
    """scripts/vote_runs.py, given a run's own two members, fits and scores the vote as the study did."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "vote_runs.py"
    data = str(tiny_run.parent / "data")
    r = subprocess.run([sys.executable, str(script), f"ann={tiny_run}:ann", f"cnn={tiny_run}:cnn", "--data-dir", data,
                        "--ceiling", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result, metrics = json.loads(r.stdout), json.loads((tiny_run / "metrics.json").read_text())
    assert result["ensemble"]["test_accuracy"] == pytest.approx(metrics["models"]["ensemble"]["accuracy"])
    assert result["weights"] == pytest.approx(metrics["weights"])
    assert result["members"]["cnn"]["test_accuracy"] == pytest.approx(metrics["models"]["cnn"]["accuracy"])
    pair = result["members_vs"]["ann_vs_cnn"]  # the four cells of the members' agreement add up to each accuracy
    n = sum(pair[k] for k in ("both_right", "a_right_b_wrong", "a_wrong_b_right", "both_wrong"))
    assert (pair["both_right"] + pair["a_right_b_wrong"]) / n == pytest.approx(metrics["models"]["ann"]["accuracy"])
    assert (pair["both_right"] + pair["a_wrong_b_right"]) / n == pytest.approx(metrics["models"]["cnn"]["accuracy"])
    # --ceiling: weight 0 is the CNN alone, 1 the ANN alone, and the fitted weight (on the same grid) the vote itself
    sweep = {round(row["weight_ann"], 2): row for row in result["ceiling"]}
    assert len(sweep) == 21
    assert sweep[0.0]["test_accuracy"] == pytest.approx(metrics["models"]["cnn"]["accuracy"])
    assert sweep[1.0]["test_accuracy"] == pytest.approx(metrics["models"]["ann"]["accuracy"])
    assert sweep[round(result["weights"]["ann"], 2)]["test_accuracy"] == pytest.approx(
        result["ensemble"]["test_accuracy"])
    shifted = subprocess.run([sys.executable, str(script), f"a={tiny_run}:ann", f"c={tiny_run}:cnn", "--shift-tta",
                              "c", "--data-dir", data], capture_output=True, text=True, timeout=300)
    assert shifted.returncode == 0 and "(+ shift TTA)" in shifted.stdout and "McNemar p" in shifted.stdout
    bad = subprocess.run([sys.executable, str(script), f"a={tiny_run}:nope", "--data-dir", data],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "has no member 'nope'" in bad.stderr
    typo = subprocess.run([sys.executable, str(script), f"a={tiny_run}:ann", "--shift-tta", "cnn", "--data-dir", data],
                          capture_output=True, text=True, timeout=300)
    assert typo.returncode != 0 and "--shift-tta names no member: cnn" in typo.stderr


def test_train_speed_ratio_times_both_recipes_alternately(monkeypatch):
    """scripts/train_speed_ratio.py: one epoch of each recipe per round, and the ratio of their mean images/s."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "scripts"))
    import train_speed_ratio

    r = train_speed_ratio.main(["quick", "quick", "--member", "ann", "--images", "256", "--rounds", "2", "--json"])
    assert len(r["a_images_per_s"]) == len(r["b_images_per_s"]) == 2
    assert r["ratio"] == pytest.approx(np.mean(r["a_images_per_s"]) / np.mean(r["b_images_per_s"]), abs=1e-3)
