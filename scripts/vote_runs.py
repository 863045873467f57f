#!/usr/bin/env python3
"""Soft-vote members taken from separate run folders, as the study votes its own (docs/results.md).

    python scripts/vote_runs.py NAME=RUN_DIR:MEMBER NAME=RUN_DIR:MEMBER ... [--shift-tta NAME] [--data-dir D] [--json]

e.g. `ann=runs/anchor/seed0:ann cnn=runs/default/seed0:cnn`: a member trained alone (`run --config` with one
member) voted with another run's. The folders must share one data split (protocol, split seed, validation share,
subset, source). As `run` does: each member's temperature fit on validation, voting weights tuned on validation
accuracy, then scored on test, with McNemar's exact test of the vote against each member. `--shift-tta NAME` also
averages that member's probabilities over its inputs shifted one pixel up, down, left and right (on top of its own
flip TTA), to measure what that would add.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from fashion_ensemble import runs  # noqa: E402
from fashion_ensemble.data import make_split  # noqa: E402
from fashion_ensemble.ensemble import SoftVotingEnsemble  # noqa: E402
from fashion_ensemble.errors import UserError  # noqa: E402
from fashion_ensemble.metrics import mcnemar_exact  # noqa: E402

SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # (rows, columns); the background is 0, so the vacated edge is too


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(N, H, W) images moved by (dy, dx) pixels, zero-filled."""
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def parse(spec: str) -> tuple[str, Path, str]:
    name, sep, rest = spec.partition("=")
    run_dir, sep2, member = rest.rpartition(":")
    if not (sep and sep2 and name and member):
        raise UserError(f"expected NAME=RUN_DIR:MEMBER such as cnn=runs/default/seed0:cnn, got {spec!r}")
    return name, Path(run_dir), member


def split_key(run_dir: Path):
    data = runs.RunFolder(run_dir).config().data
    return dataclasses.replace(data, verify_checksums=False)


def vote(specs: list[str], shift_tta: tuple[str, ...] = (), data_dir=None) -> dict:
    parsed = [parse(s) for s in specs]
    unknown = set(shift_tta) - {name for name, _, _ in parsed}
    if unknown:
        raise UserError(f"--shift-tta names no member: {', '.join(sorted(unknown))}; the members are "
                        f"{', '.join(name for name, _, _ in parsed)}")
    keys = {split_key(run_dir) for _, run_dir, _ in parsed}
    if len(keys) > 1:
        raise UserError(f"the run folders use {len(keys)} different data splits; a vote needs one: "
                        f"{sorted(map(str, keys))}")
    split = make_split(keys.pop(), data_dir, progress=False)
    members, val, test = {}, {}, {}
    for name, run_dir, member in parsed:
        loaded = runs.load(run_dir).members
        if member not in loaded:
            raise UserError(f"{run_dir} has no member {member!r}; it has {', '.join(loaded)}")
        m = members[name] = loaded[member]
        for images, out in ((split.val[0], val), (split.test[0], test)):
            proba = m.predict_proba(images, calibrated=False)
            if name in shift_tta:
                proba = (proba + sum(m.predict_proba(shifted(images, *s), calibrated=False) for s in SHIFTS)) / 5
            out[name] = proba
    y_val, y_test = split.val[1], split.test[1]
    ensemble = SoftVotingEnsemble(members).fit(val, y_val, calibrate=True)
    vote_val = ensemble.vote({n: m.calibrate(val[n]) for n, m in members.items()}).argmax(1)
    vote_test = ensemble.vote({n: m.calibrate(test[n]) for n, m in members.items()}).argmax(1)
    return {
        "members": {n: {"val_accuracy": float(np.mean(val[n].argmax(1) == y_val)),
                        "test_accuracy": float(np.mean(test[n].argmax(1) == y_test)),
                        "shift_tta": n in shift_tta} for n in members},
        "weights": ensemble.weights,
        "temperatures": {n: m.temperature for n, m in members.items()},
        "ensemble": {"val_accuracy": float(np.mean(vote_val == y_val)),
                     "test_accuracy": float(np.mean(vote_test == y_test))},
        "mcnemar_vs": {n: mcnemar_exact(y_test, vote_test, test[n].argmax(1)) for n in members},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("members", nargs="+", help="NAME=RUN_DIR:MEMBER, two or more")
    ap.add_argument("--shift-tta", action="append", default=[], metavar="NAME",
                    help="also average this member over its inputs shifted by one pixel (repeatable)")
    ap.add_argument("--data-dir", help="the data set's folder, if not where `run` found it")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    try:
        result = vote(args.members, tuple(args.shift_tta), args.data_dir)
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
    for name, r in result["mcnemar_vs"].items():
        print(f"vote vs {name}: {r['a_right_b_wrong']} images won, {r['a_wrong_b_right']} lost, "
              f"McNemar p = {r['p_value']:.3g}")


if __name__ == "__main__":
    main()
