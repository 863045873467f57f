#!/usr/bin/env python3
"""The GPU check: what a machine with an NVIDIA GPU does with fashion-ensemble, in minutes, printed.

    python3 scripts/gpu_check.py --data-dir fmnist/            # CUDA checks, then `best` in 5 minutes on the GPU
    python3 scripts/gpu_check.py --device cpu --profile quick  # the same checks on the CPU (what CI runs, smaller)

It runs from the checkout's `src/` without installing anything, on a machine that has PyTorch, numpy, scikit-learn
(with scipy), safetensors, matplotlib, tqdm, Pillow and array-api-compat, and no internet: the data set travels beside
the checkout (`--data-dir`, the four official .gz files). A missing package is named with the command that fetches
its wheel on a machine that has pip, to carry along. Exit status 0 when every check passed, 1 when one failed.

Checks, each printed with what it measured:
  - precision: `auto` picks bf16 on this GPU (fp32 on a CPU without native bf16);
  - augmentation: the same seed gives the same augmented batch on the device as on the CPU;
  - inference: a model's probabilities on the device agree with the CPU's (bf16 on CUDA: within 0.05, argmax ≥ 98%);
  - training: a small member learns synthetic classes on the device (finite losses, validation accuracy > 0.9);
then one study of `--profile` (default `best`) planned to `--time-limit` (default 5m: a lent GPU's minutes are
few; "none" keeps the profile's own budget), with its plan, times and test accuracies.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# import name → the name pip knows it by
REQUIRED = {"torch": "torch", "numpy": "numpy", "sklearn": "scikit-learn", "scipy": "scipy",
            "safetensors": "safetensors", "matplotlib": "matplotlib", "tqdm": "tqdm", "PIL": "Pillow",
            "array_api_compat": "array-api-compat"}


def missing_packages() -> list[str]:
    missing = []
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def environment(device) -> dict:
    """A run's environment facts (pipeline.environment), and the GPU's own."""
    import torch

    from fashion_ensemble.model.inference import native_bf16
    from fashion_ensemble.study.pipeline import environment as run_environment

    facts = {k: v for k, v in run_environment(device).items() if k not in ("command", "gpu")}
    facts["native_bf16"] = native_bf16(device)
    if device.type == "cuda":
        facts |= {"gpu": torch.cuda.get_device_name(device), "capability": ".".join(map(str,
                  torch.cuda.get_device_capability(device))), "cuda": torch.version.cuda,
                  "gpu_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)}
    return facts


def synthetic(n: int, kind: str = "ann", seed: int = 0):
    """Classes a member learns in a few epochs. "ann": a bright bar at row 2k+4 over dim noise (place matters to a
    fully connected layer); "cnn": noise of mean brightness 20k + 20 (what survives its global average pool)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    if kind == "cnn":
        return (rng.integers(0, 40, size=(n, 28, 28)) + 20 * labels[:, None, None]).astype(np.uint8), labels
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 4 : 2 * k + 6, 4:24] = 220
    return images, labels.astype(np.int64)


def checks(device) -> list[tuple[str, bool, str]]:
    """(name, passed, what was measured) for each device check."""
    import numpy as np
    import torch

    from fashion_ensemble.config import ANNConfig, AugmentConfig, CNNConfig, TrainConfig
    from fashion_ensemble.members import build_model
    from fashion_ensemble.model.ensemble import Member
    from fashion_ensemble.model.inference import choose_precision, native_bf16
    from fashion_ensemble.training.augment import augment
    from fashion_ensemble.training.trainer import to_tensor, train_member

    results = []
    precision, why = choose_precision("auto", device)
    expected = "bf16" if native_bf16(device) else "fp32"
    results.append(("precision", precision == expected, f"auto → {precision} ({why})"))

    images, labels = synthetic(2048)
    x = to_tensor(images[:256])
    cfg = AugmentConfig(flip=True, max_shift=2, erase_prob=0.5)
    on_cpu = augment(x, cfg, torch.Generator().manual_seed(1))
    on_device = augment(x.to(device), cfg, torch.Generator().manual_seed(1)).cpu()
    same = torch.equal(on_cpu, on_device)
    results.append(("augmentation", same, "identical batches on CPU and device" if same else
                    f"max difference {float((on_cpu - on_device).abs().max()):.3g}"))

    torch.manual_seed(0)
    model = build_model("cnn", CNNConfig(stem=16, stages=((16,), (32,))))
    cpu_proba = Member("cnn", model, "cpu", tta_flip=True, tta_shift=1).predict_proba(images[:512])  # `best`'s TTA
    dev_proba = Member("cnn", model, device, tta_flip=True, tta_shift=1).predict_proba(images[:512])
    diff = float(np.abs(cpu_proba - dev_proba).max())
    agree = float((cpu_proba.argmax(1) == dev_proba.argmax(1)).mean())
    results.append(("inference", diff < 0.05 and agree >= 0.98,
                    f"max |p_device - p_cpu| {diff:.2g}, argmax agreement {agree:.1%}"))

    start = time.perf_counter()
    for kind, member_cfg in (("ann", ANNConfig(hidden=(128,))), ("cnn", CNNConfig(stem=16, stages=((16,), (32,))))):
        images, labels = synthetic(2048, kind)
        torch.manual_seed(0)
        train_cfg = TrainConfig(epochs=4, batch_size=64, lr=5e-3, augment=AugmentConfig(epochs=1))
        _, history = train_member(build_model(kind, member_cfg), (images[:1792], labels[:1792]),
                                  (images[1792:], labels[1792:]), train_cfg, seed=0, device=device, progress=False)
        last = history[-1]
        ok = all(np.isfinite(e["train_loss"]) for e in history) and last["val_accuracy"] > 0.9
        results.append((f"training ({kind})", ok, f"val accuracy {last['val_accuracy']:.3f} after {len(history)} "
                                                   f"epochs in {last['precision']}, {last['images_per_s']:,.0f} img/s"))
    results.append(("training time", True, f"{time.perf_counter() - start:.1f} s for both"))
    return results


def study(profile: str, overrides: list[str], device, data_dir, out: Path, time_limit: str = "none") -> dict:
    """One full study (planned to `time_limit`, unless "none"); its accuracies and times."""
    from fashion_ensemble.config import parse_duration, resolve, with_time_limit
    from fashion_ensemble.model.runs import RunFolder
    from fashion_ensemble.study.pipeline import run_study

    cfg = resolve(profile_name=profile, overrides=overrides)
    if time_limit != "none":
        cfg = with_time_limit(cfg, parse_duration(time_limit))
    start = time.perf_counter()
    folder = RunFolder(run_study(cfg, out, data_dir=data_dir, device=device, progress=True, restart=True))
    seconds = time.perf_counter() - start
    models = folder.metrics()["models"]
    plan = {n: {"epochs": p.epochs, "images_per_s": round(p.images_per_s), "precision": p.precision}
            for n, p in (folder.config().budget.plan if folder.config().budget else {}).items()}
    return {"profile": profile, "overrides": overrides, "time_limit": time_limit, "plan": plan,
            "run_folder": str(folder.path), "wall_s": round(seconds, 1),
            "timing_s": {k: round(v, 1) for k, v in folder.history()["timing"].items()},
            "test_accuracy": {name: round(m["accuracy"], 4) for name, m in models.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="default cuda")
    parser.add_argument("--profile", default="best", help="the study to run after the checks (default best)")
    parser.add_argument("--time-limit", default="5m", help="the study's budget (default 5m; none: the profile's)")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="overrides",
                        help="change one field of the profile (as run --set)")
    parser.add_argument("--data-dir", default=None, help="the four Fashion-MNIST .gz files (default "
                        "$FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "gpu-check"), help="the study's run folder")
    parser.add_argument("--no-study", action="store_true", help="the checks only")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write everything printed as JSON")
    args = parser.parse_args(argv)

    missing = missing_packages()
    if missing:
        print(f"missing: {', '.join(missing)}. On a machine with pip: python3 -m pip download --no-deps "
              f"--only-binary=:all: -d wheels {' '.join(missing)}; carry wheels/ along and run: python3 -m pip "
              "install --no-index --no-deps --target /tmp/site wheels/*.whl && export PYTHONPATH=/tmp/site")
        return 2
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False); --device cpu runs the same checks on the CPU")
        return 2
    device = torch.device(args.device)
    report = {"environment": environment(device)}
    print("environment: " + ", ".join(f"{k} {v}" for k, v in report["environment"].items()), flush=True)
    report["checks"] = [{"check": n, "passed": ok, "measured": m} for n, ok, m in checks(device)]
    for c in report["checks"]:
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['check']}: {c['measured']}", flush=True)
    if not args.no_study:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        report["study"] = study(args.profile, args.overrides, device, args.data_dir, Path(args.out),
                                args.time_limit)
        s = report["study"]
        print(f"study `{s['profile']}` on {args.device}: {s['wall_s']:.0f} s wall "
              f"({', '.join(f'{k} {v:.0f} s' for k, v in s['timing_s'].items())}); test accuracy "
              + ", ".join(f"{k} {v:.4f}" for k, v in s["test_accuracy"].items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if all(c["passed"] for c in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
