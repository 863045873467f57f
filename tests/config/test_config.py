import json
from pathlib import Path

import pytest

from fashion_ensemble.config import PROFILES, RunConfig, override, profile, read_config_file
from fashion_ensemble.errors import UserError
from helpers import smoke_config

CONFIGS = {**{name: lambda name=name: profile(name) for name in PROFILES}, "smoke (tests)": smoke_config}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_profiles_round_trip_through_json(name):
    cfg = CONFIGS[name]()
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("name", list(CONFIGS))
def test_profiles_build_their_members(name):
    import torch

    from fashion_ensemble.members import build_model

    for member_name, member in CONFIGS[name]().members.items():
        model = build_model(member.kind, member.model).eval()
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        if (name, member_name) != ("best", "ann"):  # the MLP anchor's recipe augments in every epoch (config.py)
            assert member.train.augment.epochs < member.train.epochs  # augmentation is frozen before the end


def test_best_profile_trains_bigger_members_longer_than_default():
    from fashion_ensemble.members import build_model

    best, default = profile("best").members, profile("default").members
    for name in ("ann", "cnn"):
        assert best[name].train.epochs > default[name].train.epochs
        sizes = [sum(p.numel() for p in build_model(m.kind, m.model).parameters()) for m in (best[name], default[name])]
        assert sizes[0] > sizes[1], (name, sizes)


def test_overrides_and_errors():
    assert profile("default", protocol="paper", seed=3).data.protocol == "paper"
    assert profile("paper").data.protocol == "paper"
    with pytest.raises(UserError, match="unknown profile 'fast'"):
        profile("fast")
    with pytest.raises(UserError, match="unknown protocol"):
        profile("quick", protocol="kaggle")
    d = profile("quick").to_dict()
    d["members"]["ann"]["train"]["epochz"] = 3
    with pytest.raises(UserError, match="unknown field.*epochz"):
        RunConfig.from_dict(d)
    d = profile("quick").to_dict()
    d["members"]["ann"]["kind"] = "rnn"
    with pytest.raises(UserError, match="'ann' or 'cnn'"):
        RunConfig.from_dict(d)


def test_set_changes_only_the_named_fields():
    base = profile("default")
    cfg = override(base, ["members.cnn.train.epochs=12", "members.cnn.model.stages=[[16], [32, 32]]",
                          "ensemble.weights=equal", "members.cnn.train.augment.erase_prob=0.5", "seed=4"])
    cnn = cfg.members["cnn"]
    assert cnn.train.epochs == 12 and cnn.model.stages == ((16,), (32, 32)) and cnn.train.augment.erase_prob == 0.5
    assert cfg.ensemble.weights == "equal" and cfg.seed == 4
    # everything else as it was
    assert cfg.members["ann"] == base.members["ann"] and cnn.train.lr == base.members["cnn"].train.lr
    assert override(base, []) == base


@pytest.mark.parametrize("item, message", [
    ("members.cnn.train.epoch=12", "no field 'epoch' at members.cnn.train; known: augment, batch_size"),
    ("members.rnn.train.epochs=3", "no field 'rnn' at members; known: ann, cnn"),
    ("members.cnn.train.epochs", "expects PATH=VALUE"),
    ("members.cnn.train.epochs=0", "train.epochs must be 1 or more, got 0"),
    ("members.cnn.train.epochs=many", "expected int, got 'many'"),
    ("members.cnn.train.epochs.max=3", "no field 'max' at members.cnn.train.epochs"),
    ("members.ann.train.augment.elastic_alpha=-1", r"augment.elastic_alpha must be 0 \(off\) to 100 pixels"),
    ("members.ann.train.augment.elastic_sigma=0", "augment.elastic_sigma must be 0.5 to 14 pixels, got 0.0"),
])
def test_set_mistakes_say_what_and_how(item, message):
    with pytest.raises(UserError, match=message):
        override(profile("default"), [item])


@pytest.mark.parametrize(
    "section, field, value, message",
    [
        ("train", "batch_size", 0, "train.batch_size must be 1 or more, got 0"),
        ("train", "lr", -1.0, "train.lr must be a positive rate"),
        ("train", "warmup_frac", 0.9, "sum to less than 1"),
        ("train", "label_smoothing", 1.0, "train.label_smoothing"),
        ("train", "ema_decay", 1.0, r"train.ema_decay must be 0 \(off\) or a decay in \(0, 1\), got 1.0"),
        ("train", "lookahead_alpha", 0.0, r"train.lookahead_alpha must be a fraction in \(0, 1\], got 0.0"),
        ("train", "bn_bias_lr", 0.0, "train.bn_bias_lr must be a positive multiple of train.lr, got 0.0"),
    ],
)
def test_bad_values_say_what_and_how(section, field, value, message):
    d = profile("quick").to_dict()
    d["members"]["cnn"][section][field] = value
    with pytest.raises(UserError, match=message):
        RunConfig.from_dict(d)
    d = profile("quick").to_dict()
    d["data"]["protocol"] = "kaggle"
    with pytest.raises(UserError, match="data.protocol must be one of paper, standard"):
        RunConfig.from_dict(d)


def test_cli_applies_set_after_profile_config_and_seed(tmp_path):
    from fashion_ensemble.cli import build_parser, run_config  # the CLI's parser into config.resolve

    path = tmp_path / "c.json"
    path.write_text(json.dumps(profile("quick", seed=7).to_dict()))
    for given in (["--profile", "quick", "--seed", "4"], ["--config", str(path), "--seed", "4"]):
        args = build_parser().parse_args(["run", *given, "--set", "members.cnn.train.epochs=3", "--set", "seed=5"])
        cfg = run_config(args)
        assert cfg.members["cnn"].train.epochs == 3 and cfg.seed == 5 and cfg.profile == "quick"
    args = build_parser().parse_args(["ablate", "--set", "members.ann.model.hidden=[32]"])
    assert run_config(args).members["ann"].model.hidden == (32,)  # ablate's base: quick, changed


DOC_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "docs" / "configs").glob("*.json"))


PINNED = json.loads((Path(__file__).parent / "documented_configs.json").read_text())  # each file's whole config


@pytest.mark.parametrize("path", DOC_CONFIGS, ids=lambda p: p.name)
def test_the_documented_configs_still_load_as_the_runs_they_gave(path):
    """docs/results.md and docs/performance.md show `run --config docs/configs/X.json`: each overlay must still give
    the whole configuration its documented run had. When a profile changes, pin the fields the overlay relied on."""
    assert read_config_file(path) == RunConfig.from_dict(PINNED[path.name])


def test_every_documented_config_is_indexed_and_pinned():
    index = (DOC_CONFIGS[0].parent / "README.md").read_text()
    assert {p.name for p in DOC_CONFIGS} == set(PINNED)
    assert all(f"| `{p.name}` |" in index for p in DOC_CONFIGS)


@pytest.mark.parametrize("data, message", [
    ({"base": "fast"}, "unknown profile 'fast'"),
    ({"base": "quick", "members": ["rnn"]}, "must list some of the base's members"),
    ({"base": "quick", "set": {"members.cnn.train.epoch": 3}}, "no field 'epoch'"),
    ({"base": "quick", "sets": {}}, "unknown overlay key"),
])
def test_a_bad_overlay_says_what_and_how(tmp_path, data, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        read_config_file(path)


def test_best_is_the_documented_long_run_with_shift_tta():
    """README and docs/results.md give `best`'s numbers from runs of docs/configs/best-deeper-long.json, revoted with
    `--tta-shift 1` (TTA changes no training): the profile must stay exactly that."""
    import dataclasses

    from fashion_ensemble.config import map_members

    documented = RunConfig.from_dict(PINNED["best-deeper-long.json"])  # the run as it was made
    documented = map_members(documented, lambda m: dataclasses.replace(m, tta_shift=1)).replace(profile="best")
    assert profile("best").replace(budget=None) == documented  # its recipe; its budget of 2 h scales the epochs
    assert profile("best").budget.time_limit_s == 7200


def test_balanced_weights_every_member_and_a_bad_value_says_what_would_do():
    from fashion_ensemble.cli import build_parser, run_config

    cfg = run_config(build_parser().parse_args(["run", "--profile", "quick", "--balanced"]))
    assert {m.train.class_weights for m in cfg.members.values()} == {"balanced"}
    assert {m.train.class_weights for m in run_config(build_parser().parse_args(["run"])).members.values()} == {"none"}
    with pytest.raises(UserError, match='train.class_weights.*"none" or "balanced"'):
        override(cfg, ["members.ann.train.class_weights=inverse"])
