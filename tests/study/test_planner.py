"""The time budget: durations as users write them, the schedule that fills a budget, the plan recorded and replayed."""

import json

import pytest

import fashion_ensemble as fe
from fashion_ensemble.config import BudgetConfig, parse_duration, read_config_file, with_time_limit
from fashion_ensemble.data.split import make_split
from fashion_ensemble.errors import UserError
from fashion_ensemble.study import planner
from fashion_ensemble.training.calibrate import StepCost
from helpers import run_cli, smoke_config, write_config, write_dataset


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("2h", 7200), ("90s", 90), ("1h30m", 5400),
                                           ("2.5m", 150), ("45", 45), (" 3 min ", 180)])
def test_durations_as_users_write_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "-5m", "abc", "", "m", "inf", "nan", "5x", "0s"])
def test_a_bad_duration_says_what_and_how(text):
    with pytest.raises(UserError, match="expected a duration above zero such as 10m"):
        parse_duration(text)


def test_the_schedule_fills_the_budget_in_the_recipe_s_proportions():
    cfg = smoke_config()  # both recipes: 2 epochs
    cfg = cfg.replace(members={"ann": cfg.members["ann"], "cnn": fe.config.with_train(cfg.members["cnn"], epochs=4)})
    seconds = {"ann": 1.0, "cnn": 2.0}  # an epoch of each
    epochs = planner.schedule(cfg, 100.0, seconds, max_epochs=1000)
    assert sum(epochs[n] * seconds[n] for n in epochs) <= 100.0
    assert sum(epochs[n] * seconds[n] for n in epochs) > 100.0 - 2 * max(seconds.values())  # no time left over
    assert epochs["cnn"] == pytest.approx(2 * epochs["ann"], abs=1)  # the recipe's 2 : 4 epochs
    assert epochs == {"ann": 20, "cnn": 40}  # factor 10: 100 s / (2 × 1 s + 4 × 2 s)
    capped = planner.schedule(cfg, 100.0, seconds, max_epochs=35)  # the CNN held at 35 leaves its time to the ANN
    assert capped == {"ann": 30, "cnn": 35}
    assert planner.schedule(cfg, 2.5, seconds, max_epochs=10) is None  # not one epoch of each


def fake_measure(step_s: float):
    """`measure` on a fake clock: every member's step takes `step_s`, a validation pass a tenth of a second."""
    return lambda model, train, val_images, cfg, *, device, seed=0: StepCost(step_s, 0.1, "fp32")


def test_the_plan_grows_with_fewer_images_and_keeps_the_recipe_s_shares(tmp_path, monkeypatch):
    monkeypatch.setattr(planner, "measure", fake_measure(0.05))
    monkeypatch.setattr(planner, "SMALL_DATA_IMAGES", 0)  # the profile's recipe, not the small-data one
    data = write_dataset(tmp_path / "data", n_train=1200)
    cfg = with_time_limit(smoke_config(), 120)
    big = planner.plan(cfg, make_split(cfg.data, data, progress=False), "cpu")
    small_cfg = cfg.replace(data=fe.DataConfig(train_subset=300, verify_checksums=False))
    small = planner.plan(small_cfg, make_split(small_cfg.data, data, progress=False), "cpu")
    for name in ("ann", "cnn"):
        assert small.members[name].train.epochs > 2 * big.members[name].train.epochs
        p = small.budget.plan[name]
        assert (p.epochs, p.augment_epochs, p.patience) == (small.members[name].train.epochs,
                                                            small.members[name].train.augment.epochs,
                                                            small.members[name].train.patience)
        assert p.augment_epochs == round(p.epochs / 2)  # the recipe augments 1 of its 2 epochs
    split = make_split(cfg.data, data, progress=False)
    costs = {n: StepCost(0.05, 0.1, "fp32") for n in cfg.members}
    planned = sum(planner.epoch_s(big, n, split, costs[n]) * big.members[n].train.epochs for n in big.members)
    assert planned + planner.after_training_s(big, split, costs) <= 120 * (1 - big.budget.reserve_frac)


@pytest.mark.slow
def test_a_planned_run_records_its_plan_and_replays_it_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(planner, "measure", fake_measure(0.004))
    data = write_dataset(tmp_path / "data")
    cfg = with_time_limit(smoke_config(), 30)
    first = fe.train(cfg, tmp_path / "first", data_dir=data, device="cpu", progress=False)
    recorded = read_config_file(first / "config.json")
    assert recorded.budget.plan and recorded.members["ann"].train.epochs == recorded.budget.plan["ann"].epochs
    assert "Time budget 30 s with the small-data recipe: planned ann" in (first / "report.md").read_text()

    def no_measuring(*args, **kwargs):
        raise AssertionError("a replay measures nothing")

    monkeypatch.setattr(planner, "measure", no_measuring)
    again = fe.train(recorded, tmp_path / "again", data_dir=data, device="cpu", progress=False)
    assert (again / "metrics.json").read_bytes() == (first / "metrics.json").read_bytes()
    assert json.loads((again / "config.json").read_text()) == json.loads((first / "config.json").read_text())


@pytest.mark.parametrize("limit", ["0", "-5m", "abc"])
def test_a_bad_time_limit_gets_one_line_and_no_folder(tmp_path, capsys, limit):
    code, err = run_cli(capsys, "run", "--profile", "quick", "--time-limit", limit, "--out", str(tmp_path / "run"))
    assert code == 2 and len(err.splitlines()) == 1 and "--time-limit" in err and "10m" in err
    assert not any(tmp_path.iterdir())


def test_a_time_limit_too_short_for_one_epoch_gets_one_line_and_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(planner, "measure", fake_measure(1.0))  # 1 s a step: 4 steps an epoch here
    data = write_dataset(tmp_path / "data")
    cfg = write_config(tmp_path / "c.json", smoke_config())
    code, err = run_cli(capsys, "run", "--config", str(cfg), "--data-dir", str(data), "--time-limit", "20s",
                        "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "too short for this data on this machine" in err and "give a longer --time-limit" in err
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


def test_a_budget_is_checked_when_read():
    with pytest.raises(UserError, match="budget.time_limit_s must be a positive number"):
        BudgetConfig(time_limit_s=-1)
    cfg = with_time_limit(smoke_config(), 600)
    assert fe.RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_small_data_is_augmented_until_the_fine_tuning_phase(tmp_path, monkeypatch):
    monkeypatch.setattr(planner, "measure", fake_measure(0.05))
    data = write_dataset(tmp_path / "data", n_train=600)
    cfg = with_time_limit(smoke_config(), 120)  # each recipe augments 1 of its 2 epochs
    planned = planner.plan(cfg, make_split(cfg.data, data, progress=False), "cpu")
    for name, p in planned.budget.plan.items():
        finetune = planned.members[name].train.finetune_frac
        assert p.recipe == "small data" and p.augment_epochs == round(p.epochs * (1 - finetune)), p
        assert p.patience == p.epochs and not planned.members[name].train.restore_best  # the whole schedule, kept
    assert "the small-data recipe" in planner.describe(planned)[0]
    monkeypatch.setattr(planner, "SMALL_DATA_IMAGES", 100)  # 540 training images are no longer few
    planned = planner.plan(cfg, make_split(cfg.data, data, progress=False), "cpu")
    assert all(p.recipe == "profile" and p.augment_epochs == round(p.epochs / 2) for p in planned.budget.plan.values())
    assert all(m.train.restore_best for m in planned.members.values())


def test_each_member_s_deadline_leaves_room_for_the_members_after_it(tmp_path, monkeypatch):
    monkeypatch.setattr(planner, "measure", fake_measure(0.05))
    data = write_dataset(tmp_path / "data", n_train=1200)
    cfg = with_time_limit(smoke_config(), 120)
    split = make_split(cfg.data, data, progress=False)
    planned = planner.plan(cfg, split, "cpu")
    ann, cnn = planned.budget.plan["ann"], planned.budget.plan["cnn"]
    costs = {n: StepCost(0.05, 0.1, "fp32") for n in cfg.members}
    after = planner.after_training_s(planned, split, costs)
    assert cnn.finish_by_s == pytest.approx(120 - after)  # the last member: the scoring after it
    cnn_s = planner.epoch_s(planned, "cnn", split, costs["cnn"]) * cnn.epochs
    assert ann.finish_by_s == pytest.approx(120 - after - cnn_s)
    assert planner.deadlines(planned, 1000.0) == {"ann": 1000.0 + ann.finish_by_s, "cnn": 1000.0 + cnn.finish_by_s}


def test_a_hand_set_schedule_drops_the_profile_s_budget(tmp_path):
    from fashion_ensemble.cli import build_parser, run_config

    assert fe.profile("default").budget.time_limit_s == 900 and fe.profile("paper").budget is None
    assert fe.profile("quick").budget.time_limit_s == 120 and fe.profile("best").budget.time_limit_s == 7200
    args = ["run", "--profile", "default", "--set", "members.cnn.train.epochs=30"]
    cfg = run_config(build_parser().parse_args(args))
    assert cfg.budget is None and cfg.members["cnn"].train.epochs == 30  # today's fixed schedule
    cfg = run_config(build_parser().parse_args([*args, "--time-limit", "5m"]))
    assert cfg.budget.time_limit_s == 300 and cfg.members["cnn"].train.epochs == 30  # the recipe the planner scales
    cfg = run_config(build_parser().parse_args(["run", "--profile", "default", "--set", "members.cnn.train.lr=0.01"]))
    assert cfg.budget.time_limit_s == 900  # other fields keep the budget


@pytest.mark.slow
def test_a_member_stopped_by_its_deadline_is_recorded_and_replayed_exactly(tmp_path, monkeypatch):
    """A machine slower than measured, on a fake clock: the deadlines have passed when training starts, so each
    member stops after its first epoch; config.json records it, the report says it, and a replay stops there too."""
    monkeypatch.setattr(planner, "measure", fake_measure(0.004))
    real = planner.deadlines
    monkeypatch.setattr(planner, "deadlines", lambda cfg, began: {n: t - 1e6 for n, t in real(cfg, began).items()})
    data = write_dataset(tmp_path / "data")
    first = fe.train(with_time_limit(smoke_config(), 30), tmp_path / "first", data_dir=data, device="cpu",
                     progress=False)
    recorded = read_config_file(first / "config.json")
    history = json.loads((first / "history.json").read_text())["members"]
    for name, p in recorded.budget.plan.items():
        assert p.epochs > 1 and p.stopped_at == 1 and len(history[name]["epochs"]) == 1
        assert history[name]["epochs"][-1]["stop"] == "time limit"
    assert "stopped by the time limit after epoch 1" in (first / "report.md").read_text()
    monkeypatch.setattr(planner, "deadlines", real)
    again = fe.train(recorded, tmp_path / "again", data_dir=data, device="cpu", progress=False)
    assert (again / "metrics.json").read_bytes() == (first / "metrics.json").read_bytes()
    assert json.loads((again / "history.json").read_text())["members"]["cnn"]["epochs"][-1]["stop"] == "plan"
