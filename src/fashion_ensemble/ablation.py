"""`fashion-ensemble ablate`: which levers move accuracy, by how much, measured one at a time on real runs.

    OUT/base/                 a complete run of the profile
    OUT/<lever>/              a complete run of the profile with that one lever changed (training levers)
    OUT/ablation.json         {"profile", "protocol", "seed", "rows": [{lever, change, val/test accuracy, deltas}]}
    OUT/ablation.md           the table

Training levers change the config and train again. Inference levers (flip TTA, calibrated voting, tuned weights)
change only how the base run's trained members are combined, so they are scored on the base run's members.
Each lever is flipped against the profile: one the profile uses is switched off, one it does not use is switched on.
Running again with the same OUT skips the runs that are complete and resumes a stopped one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import pipeline
from .config import CNNConfig, MemberConfig, RunConfig
from .data import make_split
from .ensemble import Member, soft_vote, temperature_scale, tune_weights
from .errors import UserError
from .metrics import fit_temperature
from .runs import load, read_json, write_json


def _members(cfg: RunConfig, fn: Callable[[MemberConfig], MemberConfig], kind: str | None = None) -> RunConfig:
    """`cfg` with `fn` applied to each member (of `kind`, when given)."""
    return cfg.replace(members={n: fn(m) if kind in (None, m.kind) else m for n, m in cfg.members.items()})


def _train(m: MemberConfig, **changes) -> MemberConfig:
    return dataclasses.replace(m, train=dataclasses.replace(m.train, **changes))


def _augment(m: MemberConfig, **changes) -> MemberConfig:
    return _train(m, augment=dataclasses.replace(m.train.augment, **changes))


def _cnn(cfg: RunConfig) -> MemberConfig:
    return next(m for m in cfg.members.values() if m.kind == "cnn")


def label_smoothing(cfg):
    on = any(m.train.label_smoothing > 0 for m in cfg.members.values())
    return ("without label smoothing" if on else "label smoothing 0.1",
            _members(cfg, lambda m: _train(m, label_smoothing=0.0 if on else 0.1)))


def random_erasing(cfg):
    on = _cnn(cfg).train.augment.erase_prob > 0
    return ("CNN without random erasing" if on else "CNN with random erasing (p 0.5) in its augmented epochs",
            _members(cfg, lambda m: _augment(m, erase_prob=0.0 if on else 0.5), "cnn"))


def augment_longer(cfg):
    return ("augmentation in every epoch, not only the first five (never frozen)",
            _members(cfg, lambda m: _augment(m, epochs=m.train.epochs)))


def no_augmentation(cfg):
    return "no augmentation at all", _members(cfg, lambda m: _augment(m, epochs=0))


def depthwise_bn(cfg):
    on = _cnn(cfg).model.dw_bn
    return ("CNN without BN + ReLU between depthwise and pointwise" if on else
            "CNN with BN + ReLU after each depthwise conv too (MobileNet style)",
            _members(cfg, lambda m: dataclasses.replace(m, model=dataclasses.replace(m.model, dw_bn=not on)), "cnn"))


def wider(cfg):
    def widen(m):
        c: CNNConfig = m.model
        return dataclasses.replace(m, model=dataclasses.replace(
            c, stem=c.stem * 3 // 2, stages=tuple(tuple(w * 3 // 2 for w in s) for s in c.stages)))
    return "CNN 1.5× wider (every stage)", _members(cfg, widen, "cnn")


def longer(cfg):
    return ("every member trained 1.5× the epochs",
            _members(cfg, lambda m: _train(m, epochs=-(-m.train.epochs * 3 // 2))))


def ema(cfg):
    on = any(m.train.ema_decay > 0 for m in cfg.members.values())
    return ("without the weights' moving average" if on else
            "every member validated and kept as the moving average of its weights (EMA, decay 0.999)",
            _members(cfg, lambda m: _train(m, ema_decay=0.0 if on else 0.999)))


def second_cnn(cfg):
    name = next(n for n, m in cfg.members.items() if m.kind == "cnn")
    return "a second CNN member (own seed): ann + cnn + cnn", cfg.replace(
        members={**cfg.members, f"{name}2": cfg.members[name]})


TRAINING_LEVERS: dict[str, Callable[[RunConfig], tuple[str, RunConfig]]] = {
    "label_smoothing": label_smoothing,
    "random_erasing": random_erasing,
    "augment_every_epoch": augment_longer,
    "no_augmentation": no_augmentation,
    "depthwise_bn": depthwise_bn,
    "wider_cnn": wider,
    "longer": longer,
    "ema": ema,
    "second_cnn": second_cnn,
}
INFERENCE_LEVERS = ("tta_flip", "calibrated_voting", "tuned_weights")


def run_ablation(cfg: RunConfig, out: str | os.PathLike | None = None, levers: list[str] | None = None,
                 **options) -> Path:
    """The base run, one run per training lever, the inference levers on the base run; then ablation.json/.md."""
    levers = list(levers) if levers is not None else [*TRAINING_LEVERS, *INFERENCE_LEVERS]
    unknown = [x for x in levers if x not in TRAINING_LEVERS and x not in INFERENCE_LEVERS]
    if unknown:
        raise UserError(f"unknown lever(s) {unknown}; choose from {', '.join([*TRAINING_LEVERS, *INFERENCE_LEVERS])}")
    out = Path(out) if out is not None else Path("runs") / (
        f"ablation-{cfg.profile}-{cfg.data.protocol}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)

    base = _complete(cfg, out / "base", options)
    base_scores = _scores(base)
    rows = [{"lever": "base", "change": f"profile `{cfg.profile}` as it is", **base_scores}]
    for lever in levers:
        if lever in TRAINING_LEVERS:
            change, variant = TRAINING_LEVERS[lever](cfg)
            rows.append({"lever": lever, "change": change, **_scores(_complete(variant, out / lever, options))})
    if any(x in INFERENCE_LEVERS for x in levers):
        for lever, (change, scores) in inference_variants(base, options.get("data_dir")).items():
            if lever in levers:
                rows.append({"lever": lever, "change": change, **scores})
    for row in rows:
        for key in ("val_accuracy", "test_accuracy"):
            row[f"{key}_delta"] = row[key] - base_scores[key]
    result = {"profile": cfg.profile, "protocol": cfg.data.protocol, "seed": cfg.seed, "rows": rows}
    write_json(out / "ablation.json", result)
    (out / "ablation.md").write_text(render(result))
    return out


def _complete(cfg: RunConfig, run_dir: Path, options: dict) -> Path:
    if (run_dir / "metrics.json").is_file():
        return run_dir
    if pipeline.partial_dir(run_dir).is_dir():
        return pipeline.resume_study(run_dir, **options)
    return pipeline.run_study(cfg, run_dir, **options)


def _scores(run_dir: Path) -> dict:
    metrics = read_json(run_dir / "metrics.json")
    history = json.loads((run_dir / "history.json").read_text())
    return {
        "val_accuracy": metrics["val_accuracy"]["ensemble"],
        "test_accuracy": metrics["models"]["ensemble"]["accuracy"],
        "members_test_accuracy": {n: m["accuracy"] for n, m in metrics["models"].items() if n != "ensemble"},
        "minutes": None if "total_s" not in history.get("timing", {}) else history["timing"]["total_s"] / 60,
        "run": run_dir.name,
    }


def inference_variants(run_dir: Path, data_dir=None) -> dict[str, tuple[str, dict]]:
    """The base run's trained members, combined three other ways: each row flips one of flip TTA, calibrated voting
    and tuned weights against what the run does, keeping the other two."""
    ensemble = load(run_dir)
    cfg = RunConfig.from_dict(read_json(run_dir / "config.json"))
    split = make_split(cfg.data, data_dir)
    (x_va, y_va), (x_te, y_te) = split.val, split.test
    names = list(ensemble.members)

    predictions: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]] = {}  # (member, tta) → (val, test), once

    def predict(name: str, tta: bool) -> tuple[np.ndarray, np.ndarray]:
        if (name, tta) not in predictions:
            m = ensemble.members[name]
            raw = Member(m.kind, m.model, m.device, tta_flip=tta)
            predictions[name, tta] = raw.predict_proba(x_va), raw.predict_proba(x_te)
        return predictions[name, tta]

    def combine(tta: dict[str, bool], calibrate: bool, tuned: bool) -> dict:
        val, test = {}, {}
        for n in names:
            val[n], test[n] = predict(n, tta[n])
            if calibrate:
                t = fit_temperature(y_va, val[n])
                val[n], test[n] = temperature_scale(val[n], t), temperature_scale(test[n], t)
        w = tune_weights([val[n] for n in names], y_va) if tuned else np.full(len(names), 1 / len(names))
        acc = {n: float((test[n].argmax(1) == y_te).mean()) for n in names}
        return {
            "val_accuracy": float((soft_vote([val[n] for n in names], w).argmax(1) == y_va).mean()),
            "test_accuracy": float((soft_vote([test[n] for n in names], w).argmax(1) == y_te).mean()),
            "members_test_accuracy": acc, "minutes": None, "run": f"{run_dir.name} (re-combined)",
        }

    tta = {n: m.tta_flip for n, m in ensemble.members.items()}
    calibrated = any(m.temperature != 1.0 for m in ensemble.members.values())
    tuned = cfg.ensemble.weights == "tuned"
    any_tta = any(tta.values())
    return {
        "tta_flip": ("no flip test-time augmentation" if any_tta else "flip test-time augmentation for every member",
                     combine({n: not any_tta for n in names}, calibrated, tuned)),
        "calibrated_voting": ("members not temperature-scaled before voting" if calibrated else
                              "members temperature-scaled on validation before voting",
                              combine(tta, not calibrated, tuned)),
        "tuned_weights": ("equal voting weights" if tuned else "voting weights tuned on validation",
                          combine(tta, calibrated, not tuned)),
    }


def render(result: dict) -> str:
    rows = result["rows"]
    names = list(rows[0]["members_test_accuracy"])
    lines = [
        f"# Ablation: profile `{result['profile']}`, protocol `{result['protocol']}`, seed {result['seed']}",
        "",
        "Each row changes one thing against the profile (the base row). Ensemble accuracy on the validation split "
        "(what a choice may be made on) and on the test split; Δ in percentage points against the base run. "
        "One seed: differences under about 0.3 points are within seed-to-seed noise.",
        "",
        "| lever | change | val accuracy | Δ val | test accuracy | Δ test | "
        + " | ".join(f"{n} test" for n in names) + " | minutes |",
        "|---|---|---|---|---|---|" + "---|" * len(names) + "---|",
    ]
    for r in rows:
        members = " | ".join(f"{r['members_test_accuracy'][n]:.4f}" if n in r["members_test_accuracy"] else ""
                             for n in names)
        extra = [f"{k} {v:.4f}" for k, v in r["members_test_accuracy"].items() if k not in names]
        minutes = "" if r["minutes"] is None else f"{r['minutes']:.1f}"
        lines.append(
            f"| {r['lever']} | {r['change']}{' (' + ', '.join(extra) + ')' if extra else ''} | "
            f"{r['val_accuracy']:.4f} | {100 * r['val_accuracy_delta']:+.2f} | {r['test_accuracy']:.4f} | "
            f"{100 * r['test_accuracy_delta']:+.2f} | {members} | {minutes} |")
    lines.append("")
    return "\n".join(lines)

