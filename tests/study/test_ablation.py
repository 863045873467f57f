"""Ablation: one real run per training lever, inference levers re-combined from the base run, deltas against it."""

import json
import subprocess
import sys

import pytest

from fashion_ensemble.config import override
from fashion_ensemble.errors import UserError
from fashion_ensemble.study import ablation, levers
from helpers import smoke_config as smoke
from helpers import write_config, write_dataset


def test_every_lever_changes_exactly_what_it_says():
    cfg = smoke()  # label smoothing off, erasing on, dw_bn off, tuned + calibrated voting, CNN TTA
    changed = {name: fn(cfg) for name, fn in levers.TRAINING_LEVERS.items()}
    assert changed["label_smoothing"][1].members["ann"].train.label_smoothing == 0.1
    assert changed["random_erasing"][1].members["cnn"].train.augment.erase_prob == 0.0
    assert changed["random_erasing"][1].members["ann"] == cfg.members["ann"]  # the CNN only
    assert changed["depthwise_bn"][1].members["cnn"].model.dw_bn is True
    assert changed["wider_cnn"][1].members["cnn"].model.stages == ((12,), (24,))
    assert changed["longer"][1].members["cnn"].train.epochs == 3
    assert changed["cnn_residual"][1].members["cnn"].model.residual is True
    deeper = changed["deeper_cnn"][1].members["cnn"].model
    assert (deeper.stages, deeper.residual) == (((8,), (16, 16)), True)
    assert changed["augment_every_epoch"][1].members["cnn"].train.augment.epochs == 2
    assert changed["no_augmentation"][1].members["ann"].train.augment.epochs == 0
    assert list(changed["second_cnn"][1].members) == ["ann", "cnn", "cnn2"]
    assert {m.train.ema_decay for m in changed["ema"][1].members.values()} == {0.999}
    assert {m.train.label_smoothing for m in changed["strong_label_smoothing"][1].members.values()} == {0.2}
    assert {(m.train.bn_frozen_scale, m.train.bn_bias_lr)
            for m in changed["frozen_bn_scale"][1].members.values()} == {(True, 4.0)}
    assert {(m.train.lookahead_k, m.train.lookahead_alpha)
            for m in changed["lookahead"][1].members.values()} == {(5, 0.5)}
    assert all(m.train.augment.flip_alternate for m in changed["alternate_flip"][1].members.values())
    cnn = {k: changed[k][1].members["cnn"] for k in ("cnn_augment_to_finetune", "cnn_higher_lr")}
    assert cnn["cnn_augment_to_finetune"].train.augment.epochs == round(2 * 0.85)
    assert cnn["cnn_higher_lr"].train.lr == 2 * cfg.members["cnn"].train.lr
    assert all(changed[k][1].members["ann"] == cfg.members["ann"] for k in cnn)  # the CNN only
    assert {m.train.warmup_frac for m in changed["long_warmup"][1].members.values()} == {0.25}
    ann = {k: changed[k][1].members["ann"] for k in changed if k.startswith("ann_")}
    assert ann["ann_deeper"].model.hidden == (1024, 1024, 1024) and ann["ann_light_dropout"].model.dropout == 0.2
    assert ann["ann_augment_every_epoch"].train.augment.epochs == 2 and ann["ann_flip_tta"].tta_flip
    recipe = ann["ann_recipe"]
    assert (recipe.model.hidden, recipe.model.dropout, recipe.train.epochs, recipe.train.augment.epochs,
            recipe.train.patience, recipe.tta_flip) == ((1024, 1024, 1024), 0.2, 4, 4, 4, True)
    assert all(changed[k][1].members["cnn"] == cfg.members["cnn"] for k in ann)  # the ANN only
    for _, variant in changed.values():  # every variant is a valid, different config
        assert variant != cfg and type(variant).from_dict(variant.to_dict()) == variant
    assert set(levers.LEVERS) == {*levers.TRAINING_LEVERS, *levers.INFERENCE_LEVERS}


@pytest.mark.slow
def test_ablation_table_from_real_runs(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=600, n_test=100)
    levers = ["label_smoothing", "second_cnn", "tta_flip", "tta_shift", "calibrated_voting", "tuned_weights",
              "log_loss_weights"]
    out = ablation.run_ablation(smoke(), tmp_path / "ab", levers, data_dir=data, device="cpu", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["ablation.json", "ablation.md", "base", "label_smoothing",
                                                     "second_cnn"]
    result = json.loads((out / "ablation.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    rows = {r["lever"]: r for r in result["rows"]}
    assert list(rows) == ["base", *levers]
    base = json.loads((out / "base" / "metrics.json").read_text())
    assert rows["base"]["test_accuracy"] == base["models"]["ensemble"]["accuracy"]
    assert rows["base"]["test_accuracy_delta"] == 0
    smoothing = json.loads((out / "label_smoothing" / "metrics.json").read_text())
    assert rows["label_smoothing"]["test_accuracy"] == smoothing["models"]["ensemble"]["accuracy"]
    assert rows["label_smoothing"]["val_accuracy_delta"] == pytest.approx(
        smoothing["val_accuracy"]["ensemble"] - base["val_accuracy"]["ensemble"])
    assert set(rows["second_cnn"]["members_test_accuracy"]) == {"ann", "cnn", "cnn2"}
    # A temperature never changes a member's own predictions, only the vote; TTA off never changes the ANN's.
    members = {n: base["models"][n]["accuracy"] for n in ("ann", "cnn")}
    assert rows["calibrated_voting"]["members_test_accuracy"] == members
    assert rows["tta_flip"]["members_test_accuracy"]["ann"] == base["models"]["ann"]["accuracy"]
    assert rows["tta_flip"]["minutes"] is None and rows["label_smoothing"]["minutes"] > 0
    assert rows["tta_shift"]["change"].startswith("shift test-time") and rows["tta_shift"]["minutes"] is None
    # The base run scored its other weightings as alternatives: the re-combined rows must agree with them.
    assert rows["tuned_weights"]["test_accuracy"] == base["alternatives"]["ensemble_equal_weights"]["accuracy"]
    assert rows["log_loss_weights"]["test_accuracy"] == \
        base["alternatives"]["ensemble_log_loss_weights"]["accuracy"]
    table = (out / "ablation.md").read_text()
    assert table.count("\n| ") == 2 + len(levers)  # header, base and one row per lever

    stamp = (out / "base" / "metrics.json").stat().st_mtime_ns
    ablation.run_ablation(smoke(), out, ["label_smoothing"], data_dir=data, device="cpu", progress=False)
    assert (out / "base" / "metrics.json").stat().st_mtime_ns == stamp  # complete runs are kept


@pytest.mark.slow
def test_a_lever_the_profile_already_has_is_listed_not_trained(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=400, n_test=100)
    cfg = override(smoke(), ["members.ann.model.dropout=0.2"])  # what ann_light_dropout sets
    out = ablation.run_ablation(cfg, tmp_path / "ab", ["ann_light_dropout", "tuned_weights"], data_dir=data,
                                device="cpu", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["ablation.json", "ablation.md", "base"]
    result = json.loads((out / "ablation.json").read_text())
    assert [r["lever"] for r in result["rows"]] == ["base", "tuned_weights"]
    assert result["unchanged"] == [{"lever": "ann_light_dropout", "change": "ANN dropout 0.2"}]
    assert "Not run, as the profile already does it: ann_light_dropout (ANN dropout 0.2)." in \
        (out / "ablation.md").read_text()
    del result["unchanged"]  # an ablation.json written before the field still renders
    assert "| tuned_weights |" in ablation.render(result)


def test_unknown_lever_is_refused_before_any_run(tmp_path):
    with pytest.raises(UserError, match=r"unknown lever\(s\) \['dropout'\]"):
        ablation.run_ablation(smoke(), tmp_path / "ab", ["dropout"])
    assert not (tmp_path / "ab").exists()


@pytest.mark.slow
def test_cli_ablate(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=400, n_test=100)
    cfg = write_config(tmp_path / "smoke.json", smoke())
    r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "ablate", "--config", str(cfg), "--levers",
                        "tuned_weights", "--data-dir", str(data), "--out", str(tmp_path / "ab"), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "| tuned_weights | equal voting weights |" in r.stdout and "ablation folder:" in r.stdout
