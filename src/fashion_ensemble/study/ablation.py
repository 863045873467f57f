"""`fashion-ensemble ablate`: which levers move accuracy, by how much, measured one at a time on real runs.

    OUT/base/                 a complete run of the profile
    OUT/<lever>/              a complete run of the profile with that one lever changed (training levers)
    OUT/ablation.json         {"profile", "protocol", "seed", "rows": [{lever, change, val/test accuracy, deltas}],
                               "unchanged": [{lever, change}]: levers that would run the profile as it is}
    OUT/ablation.md           the table

Training levers change the config and train again. Inference levers (flip and shift TTA, calibrated voting, tuned
weights, the weights' criterion) change only how the base run's trained members are combined, so they are scored on
the base run's members.
Each lever is flipped against the profile: one the profile uses is switched off, one it does not use is switched on.
Running again with the same OUT skips the runs that are complete and resumes a stopped one.
"""

from __future__ import annotations

import os
from pathlib import Path

from fashion_ensemble.config import RunConfig
from fashion_ensemble.data.split import make_split
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.ensemble import Member, SoftVotingEnsemble
from fashion_ensemble.model.runs import RunFolder, default_path, write_json
from fashion_ensemble.study.levers import INFERENCE_LEVERS, LEVERS, TRAINING_LEVERS
from fashion_ensemble.study.pipeline import run_or_resume
from fashion_ensemble.study.scoring import predict, score

RESULT, TABLE = "ablation.json", "ablation.md"


def run_ablation(cfg: RunConfig, out: str | os.PathLike | None = None, levers: list[str] | None = None,
                 **options) -> Path:
    """The base run, one run per training lever, the inference levers on the base run; then ablation.json/.md."""
    levers = list(levers) if levers is not None else list(LEVERS)
    unknown = [x for x in levers if x not in LEVERS]
    if unknown:
        raise UserError(f"unknown lever(s) {unknown}; choose from {', '.join(LEVERS)}")
    out = Path(out) if out is not None else default_path(cfg, prefix="ablation-")
    out.mkdir(parents=True, exist_ok=True)

    base = run_or_resume(cfg, out / "base", **options)
    base_scores = _scores(base)
    rows = [{"lever": "base", "change": f"profile `{cfg.profile}` as it is", **base_scores}]
    unchanged = []  # levers that set what the profile already has (the ANN anchor's on `best`): nothing to train
    for lever in levers:
        if lever in TRAINING_LEVERS:
            change, variant = TRAINING_LEVERS[lever](cfg)
            if variant == cfg:
                unchanged.append({"lever": lever, "change": change})
                continue
            rows.append({"lever": lever, "change": change, **_scores(run_or_resume(variant, out / lever, **options))})
    if any(x in INFERENCE_LEVERS for x in levers):
        for lever, (change, scores) in inference_variants(base, options.get("data_dir")).items():
            if lever in levers:
                rows.append({"lever": lever, "change": change, **scores})
    for row in rows:
        for key in ("val_accuracy", "test_accuracy"):
            row[f"{key}_delta"] = row[key] - base_scores[key]
    result = {"profile": cfg.profile, "protocol": cfg.data.protocol, "seed": cfg.seed, "rows": rows,
              "unchanged": unchanged}
    write_json(out / RESULT, result)
    (out / TABLE).write_text(render(result))
    return out


def _scores(run_dir: Path) -> dict:
    folder = RunFolder(run_dir)
    total_s = folder.history()["timing"].get("total_s")
    return {**_row(folder.metrics()), "minutes": None if total_s is None else total_s / 60, "run": run_dir.name}


def _row(scores: dict) -> dict:
    """An ablation row's accuracies from a run's scores (metrics.json, or `score`'s answer)."""
    models = scores["models"]
    return {
        "val_accuracy": scores["val_accuracy"]["ensemble"],
        "test_accuracy": models["ensemble"]["accuracy"],
        "members_test_accuracy": {n: m["accuracy"] for n, m in models.items() if n != "ensemble"},
    }


def inference_variants(run_dir: Path, data_dir=None) -> dict[str, tuple[str, dict]]:
    """The base run's trained members, combined five other ways: each row flips one of flip TTA, shift TTA,
    calibrated voting, tuned weights and their criterion (validation accuracy or log-loss) against what the run does,
    keeping the rest; each re-fit on validation and scored."""
    folder = RunFolder(run_dir)
    trained = folder.load()
    cfg = folder.config()
    split = make_split(cfg.data, data_dir)
    predictions: dict[tuple, tuple] = {}  # (flip, shift) → every member's (val, test) predictions, run once each

    def combine(calibrate: bool, weighting: str, flip: bool | None = None, shift: int | None = None) -> dict:
        """flip, shift None: each member's own TTA."""
        members = {n: Member(m.kind, m.model, m.device, tta_flip=m.tta_flip if flip is None else flip,
                             tta_shift=m.tta_shift if shift is None else shift)
                   for n, m in trained.members.items()}
        ensemble = SoftVotingEnsemble(members, classes=trained.classes)
        if (flip, shift) not in predictions:
            predictions[flip, shift] = predict(ensemble, *split.val), predict(ensemble, *split.test)
        val, test = predictions[flip, shift]
        ensemble.fit(val.raw, val.labels, calibrate=calibrate, weighting=weighting)
        return {**_row(score(ensemble, test, val)), "minutes": None, "run": f"{folder.path.name} (re-combined)"}

    calibrated = any(m.temperature != 1.0 for m in trained.members.values())
    weighting = cfg.ensemble.weights
    tuned = weighting != "equal"
    any_flip = any(m.tta_flip for m in trained.members.values())
    any_shift = any(m.tta_shift for m in trained.members.values())
    return {
        "tta_flip": ("no flip test-time augmentation" if any_flip else "flip test-time augmentation for every member",
                     combine(calibrated, weighting, flip=not any_flip)),
        "tta_shift": ("no shift test-time augmentation" if any_shift else
                      "shift test-time augmentation (1 pixel each way) for every member",
                      combine(calibrated, weighting, shift=0 if any_shift else 1)),
        "calibrated_voting": ("members not temperature-scaled before voting" if calibrated else
                              "members temperature-scaled on validation before voting",
                              combine(not calibrated, weighting)),
        "tuned_weights": ("equal voting weights" if tuned else "voting weights tuned on validation",
                          combine(calibrated, "equal" if tuned else "tuned")),
        "log_loss_weights": ("voting weights tuned on validation accuracy, not log-loss" if weighting == "log_loss"
                             else "voting weights fit on validation log-loss",
                             combine(calibrated, "tuned" if weighting == "log_loss" else "log_loss")),
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
    unchanged = result.get("unchanged", [])  # absent from ablation.json files written before it
    if unchanged:
        lines += ["", "Not run, as the profile already does it: "
                  + "; ".join(f"{u['lever']} ({u['change']})" for u in unchanged) + "."]
    lines.append("")
    return "\n".join(lines)

