#!/usr/bin/env python3
"""What sharing the cores with other training processes costs, and whether fewer threads per process help
(docs/performance.md).

    python scripts/sharing_cost.py [--member ann] [--profile quick] [--processes 4] [--images 7680] [--json]

Three settings, one after the other, each training one augmented epoch of the profile's member (after a warm-up
epoch) on the same random images in every process at once: one process with PyTorch's default threads (the
baseline), N processes with the default threads each, and N processes with cores / N threads each. Prints each
setting's images/s per process and in all, and each against its fair share (the baseline over N).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def worker(member: str, profile_name: str, images: int, threads: int) -> float:
    import numpy as np
    import torch

    from fashion_ensemble.config import profile
    from fashion_ensemble.tools.bench import ours_train_images_per_s

    torch.set_num_threads(threads)
    m = profile(profile_name).members[member]
    rng = np.random.default_rng(0)
    x, y = rng.random((images, 28, 28), dtype=np.float32), rng.integers(0, 10, images)
    ours_train_images_per_s(m, x[:512], y[:512])  # warm-up
    return ours_train_images_per_s(m, x, y)


def setting(processes: int, threads: int, args) -> list[float]:
    cmd = [sys.executable, __file__, "--worker", "--member", args.member, "--profile", args.profile, "--images",
           str(args.images), "--threads", str(threads)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--member", default="ann")
    p.add_argument("--profile", default="quick")
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--images", type=int, default=7680)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    if args.worker:
        print(worker(args.member, args.profile, args.images, args.threads or cores))
        return 0
    n = args.processes
    results = {"cores": cores, "processes": n,
               "alone": setting(1, cores, args),
               f"{n} processes, {cores} threads each": setting(n, cores, args),
               f"{n} processes, {max(1, cores // n)} thread(s) each": setting(n, max(1, cores // n), args)}
    if args.json:
        print(json.dumps(results))
        return 0
    fair = results["alone"][0] / n
    print(f"{args.profile}'s {args.member}, one augmented epoch of {args.images:,} images; {cores} cores\n")
    print("| setting | images/s per process | in all | per process against a fair share |\n|---|---|---|---|")
    for name in list(results)[2:]:
        per = results[name]
        print(f"| {name} | {', '.join(f'{v:,.0f}' for v in per)} | {sum(per):,.0f} | "
              f"{sum(per) / len(per) / fair:.2f} |" if name != "alone" else
              f"| alone | {per[0]:,.0f} | {per[0]:,.0f} | {n:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
