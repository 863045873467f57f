"""Every file the CLI reads is checked: one line and exit 2, never a traceback."""


import json

import pytest
from safetensors.torch import load_file, save_file

import fashion_ensemble as fe
from fashion_ensemble.errors import UserError
from fashion_ensemble.study.pipeline import resume_study
from helpers import (
    copy_run,
    one_line,
    run_cli,
    stopped_run,
)

# -- 7. every file read is checked: one line and exit 2, never a traceback ---------------------------------------------


ENSEMBLE_DAMAGE = {
    "no weights": lambda s: s.pop("weights"),
    "no weights_file": lambda s: s["members"]["ann"].pop("weights_file"),
    "temperature null": lambda s: s["members"]["ann"].update(temperature=None),
    "members a list": lambda s: s.update(members=["ann", "cnn"]),
    "weights_file outside": lambda s: s["members"]["ann"].update(weights_file="../../etc/passwd"),
    "weights_file absolute": lambda s: s["members"]["ann"].update(weights_file="/etc/passwd"),
    "weight negative": lambda s: s["weights"].update(ann=-1),
}


@pytest.mark.parametrize("case", list(ENSEMBLE_DAMAGE))
def test_a_damaged_ensemble_json_gets_one_line(tiny_run, tmp_path, capsys, case):
    bad = copy_run(tiny_run, tmp_path / "bad")
    spec = json.loads((bad / "ensemble.json").read_text())
    ENSEMBLE_DAMAGE[case](spec)
    (bad / "ensemble.json").write_text(json.dumps(spec))
    for command in (["evaluate", str(bad)], ["export", str(bad), "--onnx", str(tmp_path / "m.onnx")]):
        code, err = run_cli(capsys, *command)
        assert code == 2 and "ensemble.json" in err and one_line(err), err


def test_another_runs_weights_are_not_followed(tiny_run, tmp_path):
    bad = copy_run(tiny_run, tmp_path / "runs" / "bad")
    copy_run(tiny_run, tmp_path / "runs" / "other")
    spec = json.loads((bad / "ensemble.json").read_text())
    spec["members"]["ann"]["weights_file"] = "../other/ann.safetensors"
    (bad / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match="a file name inside the run folder"):
        fe.load(bad)


@pytest.mark.parametrize("key", ["model", "profile", "train"])
def test_a_config_json_without_a_field_gets_one_line(tiny_run, tmp_path, capsys, key):
    bad = copy_run(tiny_run, tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    (cfg if key == "profile" else cfg["members"]["ann"]).pop(key)
    (bad / "config.json").write_text(json.dumps(cfg))
    code, err = run_cli(capsys, "evaluate", str(bad))
    assert code == 2 and f"missing field(s) ['{key}']" in err and one_line(err)


@pytest.mark.parametrize("assignment", ["members.ann.model.dropout=5", "members.ann.model.hidden=[-1]",
                                        "members.cnn.model.stem=0"])
def test_bad_set_values_are_refused_before_any_folder(tmp_path, capsys, assignment):
    code, err = run_cli(capsys, "run", "--profile", "quick", "--set", assignment, "--out", str(tmp_path / "run"))
    assert code == 2 and "config:" in err and one_line(err)
    assert list(tmp_path.iterdir()) == []


TAMPERED = {
    "next_epoch -100": lambda m: m.update(next_epoch=-100),
    "stopped 'no'": lambda m: m.update(stopped="no"),
    "no optimizer groups": lambda m: m.pop("optimizer_groups"),
    "no scheduler": lambda m: m.pop("scheduler"),
    "history not a list": lambda m: m.update(history="long"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_checkpoint_is_refused(tmp_path, tiny_data, monkeypatch, case):
    from safetensors import safe_open

    folder = stopped_run(tmp_path, tiny_data, monkeypatch)
    path = folder.checkpoint("cnn")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    TAMPERED[case](meta)
    save_file(load_file(str(path)), str(path), metadata={"state": json.dumps(meta)})
    with pytest.raises(UserError, match="unreadable training checkpoint.*delete it"):
        resume_study(folder.path, data_dir=tiny_data, device="cpu", progress=False)


def test_output_paths_that_cannot_be_written_get_one_line(tiny_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (str(blocker / "model.onnx"), "/proc/no/model.onnx"):
        code, err = run_cli(capsys, "export", str(tiny_run), "--onnx", out)
        assert code == 2 and one_line(err), err
    code, err = run_cli(capsys, "export", str(tiny_run), "--onnx", "")
    assert code == 2 and "needs a file name" in err and one_line(err)
