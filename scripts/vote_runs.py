#!/usr/bin/env python3
"""Soft-vote members taken from separate run folders, as the study votes its own (docs/results.md).

    python scripts/vote_runs.py NAME=RUN_DIR:MEMBER NAME=RUN_DIR:MEMBER ... [--weighting W] [--shift-tta NAME]
        [--data-dir D] [--json]

e.g. `ann=runs/anchor/seed0:ann cnn=runs/default/seed0:cnn`: a member trained alone (`run --config` with one
member) voted with another run's. The folders must share one data split (protocol, split seed, validation share,
subset, source). As `run` does: each member's temperature fit on validation, voting weights tuned on validation
accuracy (`--weighting log_loss`: on validation log-loss; `equal`: none), then scored on test, with McNemar's exact
test of the vote against each member, and for each pair of members the images one gets right and the other wrong
(what a vote can gain from). `--shift-tta NAME` also averages that member's probabilities over its inputs
shifted one pixel up, down, left and right (on top of its own flip TTA; as `tta_shift` 1 in its config does).
`--ceiling` (two members) also scores every weighting on a 0.05 grid on test: the best any weighting of these two
members could do, chosen on test, so a ceiling and not a result.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from fashion_ensemble.config import WEIGHTINGS  # noqa: E402
from fashion_ensemble.data.split import make_split  # noqa: E402
from fashion_ensemble.errors import UserError  # noqa: E402
from fashion_ensemble.model import runs  # noqa: E402
from fashion_ensemble.model.ensemble import SoftVotingEnsemble, soft_vote  # noqa: E402
from fashion_ensemble.study.metrics import mcnemar_exact  # noqa: E402
from fashion_ensemble.study.scoring import Predictions, predict, score  # noqa: E402


def parse(spec: str) -> tuple[str, Path, str]:
    name, sep, rest = spec.partition("=")
    run_dir, sep2, member = rest.rpartition(":")
    if not (sep and sep2 and name and member):
        raise UserError(f"expected NAME=RUN_DIR:MEMBER such as cnn=runs/default/seed0:cnn, got {spec!r}")
    return name, Path(run_dir), member


def split_key(run_dir: Path):
    data = runs.RunFolder(run_dir).config().data
    return dataclasses.replace(data, verify_checksums=False)


def vote(specs: list[str], shift_tta: tuple[str, ...] = (), data_dir=None, ceiling: bool = False,
         weighting: str = "tuned") -> dict:
    parsed = [parse(s) for s in specs]
    if ceiling and len(parsed) != 2:
        raise UserError(f"--ceiling sweeps the weighting of two members, got {len(parsed)}")
    unknown = set(shift_tta) - {name for name, _, _ in parsed}
    if unknown:
        raise UserError(f"--shift-tta names no member: {', '.join(sorted(unknown))}; the members are "
                        f"{', '.join(name for name, _, _ in parsed)}")
    keys = {split_key(run_dir) for _, run_dir, _ in parsed}
    if len(keys) > 1:
        raise UserError(f"the run folders use {len(keys)} different data splits; a vote needs one: "
                        f"{sorted(map(str, keys))}")
    split = make_split(keys.pop(), data_dir, progress=False)
    members = {}
    for name, run_dir, member in parsed:
        loaded = runs.load(run_dir).members
        if member not in loaded:
            raise UserError(f"{run_dir} has no member {member!r}; it has {', '.join(loaded)}")
        members[name] = loaded[member]
    for name in shift_tta:
        members[name].tta_shift = 1  # as a member with `tta_shift` 1 in its config (probabilities.member_proba)
    ensemble = SoftVotingEnsemble(members)
    val, test = (predict(ensemble, images, labels, ood_scores=False) for images, labels in (split.val, split.test))
    ensemble.fit(val.raw, val.labels, calibrate=True, weighting=weighting)
    scores = score(ensemble, test, val)  # as the study scores its own vote
    result = {
        "members": {n: {"val_accuracy": scores["val_accuracy"][n], "test_accuracy": scores["models"][n]["accuracy"],
                        "shift_tta": members[n].tta_shift > 0} for n in members},
        "weights": ensemble.weights,
        "temperatures": {n: m.temperature for n, m in members.items()},
        "ensemble": {"val_accuracy": scores["val_accuracy"]["ensemble"],
                     "test_accuracy": scores["models"]["ensemble"]["accuracy"]},
        "mcnemar_vs": {n: scores["significance"][f"ensemble_vs_{n}"] for n in members},
        # what a vote has to work with: the test images one member gets right and the other wrong
        "members_vs": {f"{a}_vs_{b}": mcnemar_exact(test.labels, test.raw[a].argmax(1), test.raw[b].argmax(1))
                       for a, b in itertools.combinations(members, 2)},
    }
    if ceiling:
        result["ceiling"] = weight_sweep(ensemble, test)
    return result


def weight_sweep(ensemble: SoftVotingEnsemble, test: Predictions, step: float = 0.05) -> list[dict]:
    """Test accuracy and McNemar's test against the member better on test, for the first member's weight w in
    0, step, ..., 1 (the second's 1 - w), with the fitted temperatures: one row per w."""
    names = list(ensemble.members)
    probas = [ensemble.members[n].calibrate(test.raw[n]) for n in names]
    best = max(range(2), key=lambda i: (probas[i].argmax(1) == test.labels).mean())
    rows = []
    for w in np.linspace(0.0, 1.0, round(1 / step) + 1):
        pred = soft_vote(probas, [w, 1.0 - w]).argmax(1)
        rows.append({"weight_" + names[0]: round(float(w), 4), "test_accuracy": float((pred == test.labels).mean()),
                     "vs": names[best], **mcnemar_exact(test.labels, pred, probas[best].argmax(1))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("members", nargs="+", help="NAME=RUN_DIR:MEMBER, two or more")
    ap.add_argument("--shift-tta", action="append", default=[], metavar="NAME",
                    help="also average this member over its inputs shifted by one pixel (repeatable)")
    ap.add_argument("--weighting", choices=WEIGHTINGS, default="tuned",
                    help="voting weights: tuned on validation accuracy (as the profiles), on log-loss, or equal")
    ap.add_argument("--data-dir", help="the data set's folder, if not where `run` found it")
    ap.add_argument("--ceiling", action="store_true",
                    help="two members: also score every weighting on test (chosen on test: a ceiling, not a result)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    try:
        result = vote(args.members, tuple(args.shift_tta), args.data_dir, args.ceiling, args.weighting)
    except UserError as e:
        sys.exit(f"vote_runs: {e}")
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for name, m in result["members"].items():
        tta = " (+ shift TTA)" if m["shift_tta"] else ""
        print(f"{name:10s} val {m['val_accuracy']:.4f}  test {m['test_accuracy']:.4f}{tta}")
    e = result["ensemble"]
    weights = ", ".join(f"{n} {w:.2f}" for n, w in result["weights"].items())
    print(f"{'ensemble':10s} val {e['val_accuracy']:.4f}  test {e['test_accuracy']:.4f}  (weights {weights})")
    for pair, r in result["members_vs"].items():
        a, b = pair.split("_vs_")
        print(f"{a} right and {b} wrong: {r['a_right_b_wrong']} images; {b} right and {a} wrong: "
              f"{r['a_wrong_b_right']}; both wrong: {r['both_wrong']}")
    for name, r in result["mcnemar_vs"].items():
        print(f"vote vs {name}: {r['a_right_b_wrong']} images won, {r['a_wrong_b_right']} lost, "
              f"McNemar p = {r['p_value']:.3g}")
    if "ceiling" in result:
        rows = result["ceiling"]
        key = next(iter(rows[0]))
        print(f"\nevery weighting scored on test (chosen on test: a ceiling, not a result), vs {rows[0]['vs']}:")
        for r in rows:
            print(f"  {key} {r[key]:.2f}  test {r['test_accuracy']:.4f}  won {r['a_right_b_wrong']:4d}  "
                  f"lost {r['a_wrong_b_right']:4d}  p = {r['p_value']:.3g}")


if __name__ == "__main__":
    main()
