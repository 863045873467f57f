"""The run folder's files always belong together: a rewrite (revote, ood) killed at any point leaves the old folder or
the new one; ood.safetensors is checked against the run it is loaded with; a run is never scored on data that
changed since it was trained."""

import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import fashion_ensemble as fe
from fashion_ensemble.errors import Notice, UserError
from fashion_ensemble.model.runs import RunFolder
from fashion_ensemble.study import pipeline
from fashion_ensemble.study.pipeline import run_study
from helpers import image_folder, png_bytes, smoke_config, stopping_cli, synthetic_images, wait_until_stopped

# -- a rewrite is one unit --------------------------------------------------------------------------------------------


def describes(folder) -> tuple:
    """(weighting, flag rate) as each file that records them says it; raises if two files disagree."""
    run = RunFolder(folder)
    spec, cfg, metrics = run.ensemble_spec(), run.config(), run.metrics()
    report = run.report.read_text()
    weighting = {spec["weighting"], cfg.ensemble.weights, metrics["weighting"]}
    assert len(weighting) == 1, weighting
    (w,) = weighting
    assert f"Ensemble weighting: **{w}**" in report
    assert spec["weights"] == metrics["weights"] == fe.load(folder).weights  # what predict and evaluate vote with
    flag_rate = fe.load(folder).ood.flag_rate
    assert metrics["ood"]["flag_rate"] == flag_rate and f"flags {flag_rate:.0%} of validation images" in report
    return w, flag_rate


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("command, point, changed", [
    (["revote", "--weighting", "equal"], 1, False),  # before the commit: the old folder
    (["revote", "--weighting", "equal"], 6, True),  # half of the files moved in: the new one
    (["ood", "--flag-rate", "0.2"], 2, True),  # the first file moved in
])
def test_a_rewrite_killed_at_a_chosen_point_leaves_files_that_agree(run_copy, tiny_run, command, point, changed):
    before = describes(run_copy)
    assert before == ("tuned", 0.05)
    args = [command[0], str(run_copy), *command[1:], "--data-dir", str(tiny_run.parent / "data"), "--device", "cpu"]
    proc = stopping_cli(f"replace:{point}", *args)
    wait_until_stopped(proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    assert ".rewrite" in proc.stderr.read()  # it stopped inside the run folder's rewrite
    after = describes(run_copy)  # every reader sees one state, whatever was moved in
    new = ("equal", 0.05) if command[0] == "revote" else ("tuned", 0.2)
    assert after == (new if changed else before)
    # The next writer, once it holds the lock, finishes (or drops) what the killed one left: the folder is tidy.
    with RunFolder(run_copy).lock():
        pass
    assert describes(run_copy) == after and not (run_copy / ".rewrite").exists()


def test_loading_refuses_files_that_do_not_belong_together(run_copy):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["ensemble"]["weights"] = "equal"  # as a revote that died between two files would have left it, before
    (run_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="votes with 'tuned' weights but config.json says 'equal': the files do not "
                                        "belong together"):
        fe.load(run_copy)


@pytest.mark.slow
def test_ood_rewrites_the_report_with_its_flag_rate(run_copy, tiny_run):
    pipeline.add_ood(run_copy, data_dir=tiny_run.parent / "data", device="cpu", flag_rate=0.2)
    assert describes(run_copy) == ("tuned", 0.2)


def test_ood_waits_for_no_one_it_takes_the_lock(run_copy, tiny_run):
    with RunFolder(run_copy).lock():  # as a revote in another process holds it
        with pytest.raises(UserError, match="being written by another process"):
            pipeline.add_ood(run_copy, data_dir=tiny_run.parent / "data", device="cpu")


# -- ood.safetensors is checked like ensemble.json --------------------------------------------------------------------


def tamper(path, tensors=None, metadata=None):
    with safe_open(str(path), "np") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    t.update(tensors(t) if tensors else {})
    save_file(t, str(path), metadata={**meta, **(metadata or {})})


@pytest.mark.parametrize("tensors, metadata, message", [
    (lambda t: {"ann.means": np.zeros((10, 65), np.float32)}, None, r"class means have shape \(10, 65\); its "
                                                                      "features are 64 wide"),
    (lambda t: {"ann.precision": np.eye(65, dtype=np.float32)}, None, "precision has shape"),
    (None, {"run_id": json.dumps("0" * 32)}, "it was fit for another run"),
    (None, {"classes": json.dumps(["a", "b"])}, r"fit for another run \(classes"),
    (None, {"input_shape": json.dumps([3, 32, 32])}, r"fit for another run \(input_shape"),
    (None, {"flag_rate": "abc"}, "flag_rate 'abc' is not a number"),
    (None, {"flag_rate": "1.5"}, r"not a fraction in \(0, 1\)"),
    (lambda t: {"ann.log_moments": np.zeros(1)}, None, r"log_moments must be \[mean, std > 0\]"),
    (lambda t: {"cnn.log_moments": np.array([1.0, 0.0])}, None, r"log_moments must be \[mean, std > 0\]"),
    (lambda t: {"reference": np.zeros(0, np.float32)}, None, "must be a non-empty list"),
    (lambda t: {"ann.precision": np.full_like(t["ann.precision"], np.nan)}, None, "NaN or infinite"),
    (lambda t: {"reference": t["reference"].astype(np.int64)}, None, "not floating point"),
])
def test_a_damaged_or_foreign_ood_file_is_refused_in_one_line(run_copy, tensors, metadata, message):
    tamper(run_copy / "ood.safetensors", tensors, metadata)
    with pytest.raises(UserError, match=message) as e:
        fe.load(run_copy)
    assert "\n" not in str(e.value) and "fashion-ensemble ood RUN" in str(e.value)


@pytest.mark.slow
def test_a_foreign_ood_file_stops_predict_and_serve_in_one_line(run_copy, tmp_path):
    tamper(run_copy / "ood.safetensors", metadata={"run_id": json.dumps("f" * 32)})
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(synthetic_images(np.array([3]))[0]))
    for args in (["predict", str(run_copy), str(image)], ["serve", str(run_copy), "--port", "0"]):
        r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", *args], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "fit for another run" in r.stderr, r.stderr


def test_folders_from_before_run_ids_still_load(run_copy):
    spec = json.loads((run_copy / "ensemble.json").read_text())
    del spec["run_id"]
    (run_copy / "ensemble.json").write_text(json.dumps(spec))
    assert fe.load(run_copy).ood is not None
    assert fe.load(None).ood is not None  # the shipped model: written before both


# -- the data a run was trained on ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run of a pooled image folder (3 classes × 40), and that folder."""
    import dataclasses

    root = tmp_path_factory.mktemp("folder_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        photos = image_folder(root / "photos")
        cfg = smoke_config()
        cfg = cfg.replace(data=dataclasses.replace(cfg.data, source=str(photos), pipeline="pad"))
        yield run_study(cfg, root / "run", device="cpu", progress=False), photos


def files_of(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def refused_everywhere(run, match):
    before = files_of(run)
    with pytest.raises(UserError, match=match):
        pipeline.evaluate(run, device="cpu")
    with pytest.raises(UserError, match=match):
        pipeline.revote_run(run, weighting="equal", device="cpu")
    with pytest.raises(UserError, match=match):
        pipeline.add_ood(run, device="cpu", flag_rate=0.2)
    assert files_of(run) == before  # nothing was rewritten, ood.safetensors least of all


def test_scoring_a_folder_that_gained_images_is_refused(folder_run, tmp_path, monkeypatch):
    run, photos = folder_run
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    added = []
    for k, name in enumerate(("bag", "coat", "shoe")):  # one more image per class re-splits the whole pool
        added.append(photos / name / "extra.png")
        added[-1].write_bytes(png_bytes(synthetic_images(np.array([k]), seed=99)[0]))
    try:
        refused_everywhere(run, r"its data changed since it was trained \(train: 96 images then, 98 now .*; val: "
                                r".*; test: 12 images then, 13 now")
    finally:
        for f in added:
            f.unlink()
    assert pipeline.evaluate(run, device="cpu")["ensemble"]["accuracy"] >= 0  # the same data again: scored


def test_a_class_folder_added_after_training_is_refused(folder_run, tmp_path, monkeypatch):
    run, photos = folder_run
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    image_folder(photos, classes=("hat",), per_class=40)
    try:
        refused_everywhere(run, r"the classes differ: the run has 3, the data now 4; added \['hat'\]")
    finally:
        shutil.rmtree(photos / "hat")


def test_same_sizes_other_images_is_refused(folder_run, tmp_path, monkeypatch):
    run, photos = folder_run
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    file = photos / "bag" / "000.png"
    original = file.read_bytes()
    file.write_bytes(png_bytes(synthetic_images(np.array([0]), seed=12345)[0]))
    try:
        with pytest.raises(UserError, match=r"as many images \(\d+\), but other images or labels"):
            pipeline.evaluate(run, device="cpu")
    finally:
        file.write_bytes(original)


def test_a_folder_without_a_fingerprint_is_scored_with_a_notice(folder_run, tmp_path, monkeypatch):
    run, _ = folder_run
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    old = shutil.copytree(run, tmp_path / "old")
    metrics = json.loads((old / "metrics.json").read_text())
    del metrics["split"]["fingerprint"]  # as every folder written before fingerprints
    (old / "metrics.json").write_text(json.dumps(metrics))
    with pytest.warns(Notice, match="before run folders recorded their data's fingerprint"):
        assert pipeline.evaluate(old, device="cpu")["ensemble"]["accuracy"] >= 0


@pytest.mark.slow
def test_the_same_seed_gives_the_same_metrics_byte_for_byte(folder_run, tmp_path, monkeypatch):
    run, _ = folder_run
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    again = run_study(RunFolder(run).config(), tmp_path / "again", device="cpu", progress=False)
    assert (again / "metrics.json").read_bytes() == (run / "metrics.json").read_bytes()
    assert (again / "ensemble.json").read_bytes() == (run / "ensemble.json").read_bytes()


@pytest.mark.slow
def test_a_resume_on_data_that_changed_since_the_run_started_is_refused(tmp_path, monkeypatch):
    from fashion_ensemble.study.pipeline import resume_study
    from helpers import write_dataset

    def full_disk(*args):
        raise OSError("no space left on device")

    data = write_dataset(tmp_path / "data")
    monkeypatch.setattr("fashion_ensemble.study.pipeline.write_report", full_disk)
    with pytest.raises(OSError):  # stopped after training, its checkpoints kept
        run_study(smoke_config(), tmp_path / "run", data_dir=data, device="cpu", progress=False)
    monkeypatch.undo()
    write_dataset(data, seed=5)  # other images, the same sizes
    with pytest.raises(UserError, match=r"its data changed since the run started \(train: as many images .*--restart"):
        resume_study(tmp_path / "run", data_dir=data, device="cpu", progress=False)
    write_dataset(data)  # the data it started on: resumed
    assert RunFolder(resume_study(tmp_path / "run", data_dir=data, device="cpu", progress=False)).is_complete()
