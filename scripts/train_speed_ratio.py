#!/usr/bin/env python3
"""How much dearer an epoch of one member's recipe is than another's, measured in one process (docs/results.md).

    python scripts/train_speed_ratio.py A B [--member cnn] [--images 3840] [--rounds 2] [--threads 1] [--json]

A and B: a profile name (`best`) or a config file (`docs/configs/best-deeper.json`). After an untimed warm-up round,
each round trains one augmented epoch of A's member, then of B's, with the project's trainer on the same random
images; alternating cancels a shared machine's drift. Prints each epoch's images/s and A's mean over B's:
above 1, B is the dearer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fashion_ensemble.config import PROFILES, RunConfig, profile, read_config_file  # noqa: E402
from fashion_ensemble.tools.bench import ours_train_images_per_s  # noqa: E402


def recipe(source: str) -> RunConfig:
    return profile(source) if source in PROFILES else read_config_file(source)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a"), p.add_argument("b")
    p.add_argument("--member", default="cnn")
    p.add_argument("--images", type=int, default=3840)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    configs = [recipe(source) for source in (args.a, args.b)]
    for source, cfg in zip((args.a, args.b), configs):
        if args.member not in cfg.members:
            p.error(f"{source} has no member {args.member!r}; it has: {', '.join(cfg.members)}")
    members = [cfg.members[args.member] for cfg in configs]
    rng = np.random.default_rng(0)
    images = rng.random((args.images, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, args.images)
    img_s: list[list[float]] = [[], []]  # A's epochs, B's
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        for m in members:  # a first, untimed round: the first epoch in a process is slower (warm-up)
            ours_train_images_per_s(m, images[:256], labels[:256])
        for _ in range(args.rounds):
            for i, m in enumerate(members):
                img_s[i].append(round(ours_train_images_per_s(m, images, labels), 1))
    finally:
        torch.set_num_threads(threads)  # main() is also called in-process (tests)
    result = {"a": args.a, "b": args.b, "a_images_per_s": img_s[0], "b_images_per_s": img_s[1],
              "ratio": round(float(np.mean(img_s[0]) / np.mean(img_s[1])), 3)}
    print(json.dumps(result) if args.json else
          f"A {args.a}: {img_s[0]} img/s\nB {args.b}: {img_s[1]} img/s\nA / B: {result['ratio']}×")
    return result


if __name__ == "__main__":
    main()
