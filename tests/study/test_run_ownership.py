"""A run folder's work is never lost: a stopped run stays resumable, one writer per folder, a full disk, refused
resumes."""


import subprocess
import sys

import pytest

from fashion_ensemble.errors import UserError
from fashion_ensemble.model.runs import RunFolder
from fashion_ensemble.study.pipeline import resume_study, run_study
from helpers import (
    one_line,
    resume_config,
    run_cli,
    smoke_config,
    stopped_run,
    stopping_cli,
    wait_until_stopped,
    write_config,
    write_dataset,
)

# -- 3. resumable work is never deleted; one writer per folder ---------------------------------------------------------


@pytest.mark.slow
def test_a_stopped_run_is_not_deleted_by_a_new_one(tmp_path, tiny_data, monkeypatch):
    folder = stopped_run(tmp_path, tiny_data, monkeypatch)
    checkpoints = sorted(p.name for p in folder.checkpoint("ann").parent.iterdir())
    with pytest.raises(UserError, match=r"--resume .*--restart"):
        run_study(smoke_config(), folder.path, data_dir=tiny_data, device="cpu", progress=False)
    assert sorted(p.name for p in folder.checkpoint("ann").parent.iterdir()) == checkpoints  # kept
    out = run_study(smoke_config(), folder.path, data_dir=tiny_data, device="cpu", progress=False, restart=True)
    assert RunFolder(out).is_complete()


@pytest.mark.slow
def test_a_folder_being_written_is_refused(tmp_path, tiny_data, monkeypatch):
    folder = stopped_run(tmp_path, tiny_data, monkeypatch)
    with folder.lock():  # as another process writing it holds it
        with pytest.raises(UserError, match="being written by another process"):
            resume_study(folder.path, data_dir=tiny_data, device="cpu", progress=False)
        with pytest.raises(UserError, match="being written by another process"):
            run_study(smoke_config(), folder.path, data_dir=tiny_data, device="cpu", progress=False, restart=True)
    assert folder.is_partial()
    assert RunFolder(resume_study(folder.path, data_dir=tiny_data, device="cpu", progress=False)).is_complete()
    assert not list(tmp_path.glob(".*.lock"))  # released and removed


@pytest.mark.slow
def test_two_processes_on_one_folder(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=2000, n_test=100)
    cfg = write_config(tmp_path / "c.json", resume_config())
    args = ["run", "--config", str(cfg), "--data-dir", str(data), "--out", str(tmp_path / "run"), "--device", "cpu",
            "--quiet"]
    first = stopping_cli("checkpoint:ann:1:after", *args)  # holds the folder, stopped mid-training
    try:
        wait_until_stopped(first)
        second = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", *args], capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 2 and "being written by another process" in second.stderr, second.stderr
        assert one_line(second.stderr)
    finally:
        first.kill()
        first.wait()
    # The first was killed: its lock died with it, its checkpoints stay, and a new run points to --resume.
    again = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", *args], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr and (tmp_path / ".run.partial").is_dir()


@pytest.mark.slow
def test_a_full_disk_gets_one_line_and_the_run_stays_resumable(tmp_path, tiny_data, capsys, monkeypatch):
    from safetensors import SafetensorError

    from fashion_ensemble.training import checkpoint

    def full(*args, **kwargs):
        raise SafetensorError("No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)
    cfg = write_config(tmp_path / "c.json", smoke_config())
    code, err = run_cli(capsys, "run", "--config", str(cfg), "--data-dir", str(tiny_data), "--out",
                        str(tmp_path / "run"), "--device", "cpu", "--quiet")
    assert code == 2 and "No space left on device" in err and one_line(err), err
    assert RunFolder(tmp_path / "run").is_partial()  # nothing looks complete; --resume can go on once there is space
    monkeypatch.undo()
    assert RunFolder(resume_study(tmp_path / "run", data_dir=tiny_data, device="cpu", progress=False)).is_complete()


def test_refused_resumes_and_runs_create_no_folders(tmp_path, tiny_data):
    with pytest.raises(UserError, match="nothing to resume"):
        resume_study(tmp_path / "no" / "such" / "run", data_dir=tiny_data, device="cpu")
    with pytest.raises(UserError, match="does not exist"):
        run_study(smoke_config(), tmp_path / "runs" / "x", data_dir=tmp_path / "no-data", device="cpu")
    assert not (tmp_path / "no").exists()  # a refused resume creates nothing
    assert list((tmp_path / "runs").iterdir()) == []  # a refused run: the run's parent only, no lock, no partial
