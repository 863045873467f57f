"""Precision and recall of `fashion-ensemble labels` against labels flipped on purpose (scripts/small_folder.py
--flip), as docs/own-images.md measures them:

    python scripts/small_folder.py /tmp/fm300flip --per-class 300 --flip 0.05
    fashion-ensemble run --data /tmp/fm300flip --time-limit 4m --out runs/fm300flip
    fashion-ensemble labels runs/fm300flip --csv runs/fm300flip-issues.csv
    python scripts/label_check.py /tmp/fm300flip/flipped.csv runs/fm300flip-issues.csv
"""

from __future__ import annotations

import argparse
import csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("flipped", help="the folder's flipped.csv (file, true class)")
    ap.add_argument("issues", help="the labels command's CSV")
    args = ap.parse_args()
    with open(args.flipped, newline="") as f:
        flipped = {row["file"]: row["true class"] for row in csv.DictReader(f)}
    with open(args.issues, newline="") as f:
        issues = list(csv.DictReader(f))
    flagged = {row["origin"]: row for row in issues}
    hits = [o for o in flagged if o in flipped]
    right = sum(flagged[o]["suggested"] == flipped[o] for o in hits)
    print(f"flipped {len(flipped)}, flagged {len(flagged)} (by part: "
          + ", ".join(f"{p} {sum(r['part'] == p for r in issues)}" for p in ("train", "val", "test"))
          + f"); flipped and flagged {len(hits)}: precision {len(hits) / max(len(flagged), 1):.3f}, recall "
          f"{len(hits) / len(flipped):.3f}; the true class suggested for {right} of them")
    for k in (25, 50, 100):
        top = [row["origin"] for row in issues[:k]]
        print(f"  precision of the first {k}: {sum(o in flipped for o in top) / max(len(top), 1):.3f}")


if __name__ == "__main__":
    main()
