"""`run --init-from`: members start from a trained run's weights; other classes get a fresh classifier."""

import dataclasses
import json

import pytest
import torch

import fashion_ensemble as fe
from fashion_ensemble.config import InitConfig
from fashion_ensemble.errors import UserError
from fashion_ensemble.members import build_model
from fashion_ensemble.study import warmstart
from helpers import image_folder, one_line, run_cli, smoke_config


def folder_config(folder, **data):
    cfg = smoke_config()
    return cfg.replace(data=dataclasses.replace(cfg.data, source=str(folder), **data))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("warm") / "photos")  # 3 classes, where tiny_run has 10


def test_other_classes_copy_the_body_and_start_a_fresh_classifier(tiny_run, photos):
    cfg = warmstart.init_from(folder_config(photos), str(tiny_run))
    start = fe.RunFolder(tiny_run)
    assert cfg.init == InitConfig(source=str(tiny_run), run_id=start.run_id()) and cfg.init.run_id
    source = start.load()
    for name, m in cfg.members.items():
        assert m.model == start.config().members[name].model  # the starting run's architecture
        assert m.train.lr == pytest.approx(smoke_config().members[name].train.lr * warmstart.WARM_LR)
        assert m.train.warmup_frac >= warmstart.WARM_UP
        model = build_model(m.kind, m.model, 3, cfg.data.input_shape)
        fresh = warmstart.start_weights(model, cfg, name)
        last = [k for k in model.state_dict() if k.endswith(("weight", "bias"))][-2:]
        assert sorted(fresh) == sorted(last)  # the classifier's last layer, and nothing else
        theirs = source.members[name].model.state_dict()
        assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items() if k not in fresh)


def test_the_same_classes_continue_every_weight(tiny_run):
    cfg = warmstart.init_from(fe.RunFolder(tiny_run).config(), str(tiny_run))
    for name, m in cfg.members.items():
        assert warmstart.start_weights(build_model(m.kind, m.model, 10, cfg.data.input_shape), cfg, name) == []


@pytest.mark.slow
def test_a_warm_run_records_its_start_and_says_so(tiny_run, photos, tmp_path):
    cfg = warmstart.init_from(folder_config(photos), str(tiny_run))
    run = fe.train(cfg, tmp_path / "run", device="cpu", progress=False)
    recorded = json.loads((run / "config.json").read_text())["init"]
    assert recorded == {"source": str(tiny_run), "run_id": fe.RunFolder(tiny_run).run_id()}
    assert "Started from the trained run" in (run / "report.md").read_text()
    assert list(fe.load(run).classes) == ["bag", "coat", "shoe"]


def test_bad_starts_are_refused_in_one_line(tiny_run, photos, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for argv, message in [
        (["run", "--data", str(photos), "--init-from", str(tmp_path / "empty")], "not a complete run folder"),
        (["run", "--data", str(photos), "--channels", "3", "--init-from", str(tiny_run)],
         "that run's input is 1 channel(s) of 28×28 pixels, this data's 3 of 28×28; give --channels 1 --image-size 28"),
        (["run", "--data", str(photos), "--image-size", "32", "--init-from", str(tiny_run)], "--image-size 28"),
    ]:
        code, err = run_cli(capsys, *argv, "--out", str(tmp_path / "out"))
        assert code == 2 and one_line(err) and message in err, (argv, err)
        assert not (tmp_path / "out").exists()


def test_a_start_whose_weights_changed_is_refused(tiny_run, photos):
    cfg = warmstart.init_from(folder_config(photos), str(tiny_run))
    cfg = cfg.replace(init=dataclasses.replace(cfg.init, run_id="0" * 32))  # as if the folder was retrained since
    m = cfg.members["ann"]
    with pytest.raises(UserError, match="its weights changed since this run started from them"):
        warmstart.start_weights(build_model(m.kind, m.model, 3, cfg.data.input_shape), cfg, "ann")


def test_the_shipped_model_is_a_start():
    cfg = warmstart.init_from(fe.profile("quick"), "pretrained")
    assert cfg.init.source == "pretrained" and cfg.members["cnn"].model == fe.RunFolder(
        warmstart.run_or_pretrained(None)).config().members["cnn"].model
    # the shipped folder predates run_ids: its digest is computed from its weights, as a run's run_id is
    assert len(cfg.init.run_id) == 32 and cfg.init.run_id == fe.RunFolder(warmstart.run_or_pretrained(None)
                                                                            ).weights_digest()


def test_a_run_id_is_the_digest_of_its_loaded_weights(tiny_run):
    from fashion_ensemble.model.runs import weights_digest

    assert weights_digest(fe.load(tiny_run)) == fe.RunFolder(tiny_run).run_id() == fe.RunFolder(tiny_run
                                                                                               ).weights_digest()
