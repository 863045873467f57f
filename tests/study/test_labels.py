"""`fashion-ensemble labels`: images whose given label the models doubt, found in every part, down to the file."""

import csv
import dataclasses
import json
import shutil

import pytest

import fashion_ensemble as fe
from fashion_ensemble.config import map_members, with_train
from fashion_ensemble.study import labels
from helpers import image_folder, one_line, run_cli, smoke_config

FLIPPED = {"train/coat/003.png": "bag", "train/coat/011.png": "shoe", "train/bag/005.png": "shoe",
           "train/shoe/007.png": "coat", "test/bag/002.png": "coat", "test/shoe/004.png": "bag"}


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    """A run on an image folder of three easy classes, six of whose files sit in the wrong class folder."""
    root = tmp_path_factory.mktemp("labels")
    folder = image_folder(root / "photos", per_class=40, splits=["train", "test"])
    for path, wrong in FLIPPED.items():
        part, _, name = path.split("/")
        shutil.move(folder / path, folder / part / wrong / f"moved-{name}")
    cfg = smoke_config()
    cfg = map_members(cfg, lambda m: with_train(m, epochs=6, augment=dataclasses.replace(m.train.augment, epochs=0)))
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, source=str(folder)))
    run = fe.train(cfg, root / "run", device="cpu", progress=False)
    return run, folder


def moved(path: str) -> str:
    part, _, name = path.split("/")
    return f"{part}/{FLIPPED[path]}/moved-{name}"


@pytest.mark.slow
def test_the_files_in_the_wrong_folder_are_found_in_train_and_test(noisy_run, tmp_path, capsys):
    run, folder = noisy_run
    out = tmp_path / "issues.csv"
    code, err = run_cli(capsys, "labels", str(run), "--csv", str(out), "--folds", "2", "--quiet", "--device", "cpu")
    assert code == 0, err
    with open(out, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    assert tuple(header) == labels.COLUMNS
    flagged = {row[2]: row for row in rows}
    found = [p for p in FLIPPED if moved(p) in flagged]
    assert len(found) >= 5, (found, list(flagged)[:10])  # recall: 5 or 6 of the 6 moved files
    assert len(rows) <= 12  # precision: at least half of what it flags was moved
    for path in found:  # the suggestion is the folder the file came from
        row = flagged[moved(path)]
        assert row[3] == FLIPPED[path] and row[4] == path.split("/")[1]
    assert {row[0] for row in rows} <= set(labels.PARTS) and "train" in {flagged[moved(p)][0] for p in found}
    qualities = [float(row[6]) for row in rows]
    assert qualities == sorted(qualities)
    assert out.with_suffix(".png").is_file()


@pytest.mark.slow
def test_a_fold_budget_plans_the_folds(noisy_run, monkeypatch):
    run, _ = noisy_run
    planned = []

    def spy(cfg, split, device, spent_s=0.0):  # what the planner is asked; its answer: one epoch a member
        planned.append((cfg.budget.time_limit_s, cfg.budget.plan, len(split.train[1])))
        return map_members(cfg, lambda m: with_train(m, epochs=1))

    monkeypatch.setattr(labels.planner, "plan", spy)
    labels.label_issues(run, folds=2, time_limit_s=60, device="cpu", progress=False)
    assert planned == [(30, {}, 54), (30, {}, 54)]  # each fold half the minute, half the 108 training images


def test_bad_inputs_get_one_line(noisy_run, tmp_path, capsys):
    run, _ = noisy_run
    (tmp_path / "empty").mkdir()
    for argv, message in [
        (["labels", str(tmp_path / "empty")], "is not a complete run folder"),
        (["labels", str(run), "--folds", "1", "--csv", str(tmp_path / "x.csv")], "--folds must be 2 or more"),
        (["labels", str(run), "--csv", str(tmp_path / "no" / "x.csv")], "cannot write"),
        (["labels", str(run), "--time-limit", "-5m"], "time"),
    ]:
        code, err = run_cli(capsys, *argv)
        assert code == 2 and one_line(err) and message in err, (argv, err)


def test_a_run_without_its_data_is_refused_in_one_line(noisy_run, tmp_path, capsys):
    run, folder = noisy_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = fe.RunConfig.from_dict(json.loads((copy / "config.json").read_text()))
    gone = dataclasses.replace(cfg.data, source=str(tmp_path / "gone"))
    (copy / "config.json").write_text(json.dumps(cfg.replace(data=gone).to_dict()))
    code, err = run_cli(capsys, "labels", str(copy), "--csv", str(tmp_path / "x.csv"))
    assert code == 2 and one_line(err) and "gone" in err, err
    assert not (tmp_path / "x.csv").exists()


def test_ctrl_c_leaves_an_earlier_table_as_it_was(noisy_run, tmp_path, monkeypatch, capsys):
    run, _ = noisy_run
    out = tmp_path / "issues.csv"
    out.write_text("an earlier table\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(labels, "cross_validated", interrupted)
    code, err = run_cli(capsys, "labels", str(run), "--csv", str(out))
    assert code == 130 and "interrupted" in err
    assert out.read_text() == "an earlier table\n" and sorted(p.name for p in tmp_path.iterdir()) == ["issues.csv"]

