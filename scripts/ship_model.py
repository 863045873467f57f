#!/usr/bin/env python3
"""Make a finished run folder the model that ships with the package (src/fashion_ensemble/model/pretrained/).

    fashion-ensemble run --profile default --seed 0 --out runs/ship
    python scripts/ship_model.py runs/ship [--seeds runs/default-seeds0-2]

The weights are stored in half precision when that leaves every test prediction as it was (measured here on the
run's own test split, and refused otherwise: then they stay in fp32); config.json, ensemble.json, metrics.json,
report.md and the plots are copied as they are, and MODEL_CARD.md is written from them. `--seeds` names a finished
`--seeds` study of the same profile (its summary.json): the card then quotes its means over the seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from fashion_ensemble.data.split import make_split  # noqa: E402
from fashion_ensemble.errors import UserError  # noqa: E402
from fashion_ensemble.model.runs import PRETRAINED, RunFolder  # noqa: E402
from fashion_ensemble.study.report import test_time_views  # noqa: E402
from fashion_ensemble.study.seeds import read_summary  # noqa: E402
from fashion_ensemble.text import markdown  # noqa: E402

COPIED = ("config.json", "ensemble.json", "metrics.json", "ood.safetensors", "report.md", "training_curves.png",
          "confusion_matrices.png", "per_class_f1.png", "reliability.png")


def half(src: Path, dst: Path) -> None:
    """A safetensors file with its floating tensors in fp16 (its metadata kept)."""
    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(dst), metadata=metadata)


def card(run: RunFolder, fp16: dict, seeds: dict | None = None) -> str:
    m, cfg = run.metrics(), run.config()
    history = run.history()
    env = history.get("environment") or m.get("environment", {})  # history.json (older runs: metrics)
    then = "".join(f"`{r['command']}`, then " for r in history.get("revoted", []))  # its vote fit again, if it was
    models = m["models"]
    classes = ", ".join(map(markdown, m["classes"]))  # a folder's names: text, never markup
    rows = "\n".join(f"| {markdown(name)} | {s['accuracy']:.4f} | "
                     f"{s['accuracy_ci95'][0]:.4f}–{s['accuracy_ci95'][1]:.4f} | "
                     f"{s['macro_f1']:.4f} | {s['ece']:.4f} |" for name, s in models.items())
    sig = "; ".join(f"against {k.removeprefix('ensemble_vs_')}: {s['a_right_b_wrong']} vs {s['a_wrong_b_right']} "
                    f"images, p = {s['p_value']:.2g}" for k, s in m["significance"].items())
    return f"""# Model card: the shipped fashion-ensemble model

**What it is**: an ANN + depthwise-separable CNN soft-voting ensemble (profile `{cfg.profile}`, seed {cfg.seed};
voting weights {", ".join(f"{n} {w:.2f}" for n, w in m["weights"].items())}, members temperature-scaled on
validation) that classifies a garment image into its {len(m["classes"])} classes: {classes}.
{test_time_views(cfg).strip()}

**Data and protocol**: Fashion-MNIST, `{m["protocol"]}` protocol: trained on 54,000 of the official 60,000 training
images (6,000 held out for validation, early stopping and the voting weights), scored once on the official
10,000-image test set.

**Accuracy on the official test set** (95% bootstrap intervals over the test images; ECE: expected calibration
error, 15 bins):

| model | accuracy | 95% CI | macro F1 | ECE |
|---|---|---|---|---|
{rows}

McNemar's exact test of the ensemble: {sig}. {seeds_sentence(cfg.profile, seeds)} `report.md` beside this card has
the per-class scores, confusion matrices, calibration and the training curves.

**Stored in half precision**: {fp16["note"]}

**Made with**: `{env.get("command", "fashion-ensemble run --profile " + cfg.profile)}`, then {then}
`python scripts/ship_model.py RUN_DIR`; on {env.get("cpu", "?")} ({env.get("cpu_threads", "?")} threads), Python
{env.get("python", "?")}, PyTorch {env.get("torch", "?")}, fashion-ensemble {env.get("fashion_ensemble", "?")}
(commit {env.get("commit", "?")}).

**Limits**: it learnt single garments, shoes and bags photographed flat on a plain background, seen at 28×28 in
greyscale; worn clothes, cluttered scenes or several items are outside that. Shirt, T-shirt/top, Pullover and Coat
are where most of its errors are. It gives every input a class, even noise or a non-garment, but says when an input
looks unlike its training images ("ood": true, docs/ood.md): {ood_sentence(m.get("ood"))}
"""


def seeds_sentence(profile: str, summary: dict | None) -> str:
    """The profile's test accuracy over a `--seeds` study's seeds, from its summary.json (None: where to look)."""
    if summary is None:
        return "Its profile's results over several seeds: README.md and docs/results.md."
    if summary["profile"] != profile:
        raise UserError(f"the --seeds study is of profile {summary['profile']!r}, the shipped run of {profile!r}: "
                        "name a study of the same profile")
    means = ", ".join(f"{name} {m['accuracy']['mean']:.4f} ± {m['accuracy']['std']:.4f}"
                      for name, m in summary["models"].items())
    seeds = ", ".join(map(str, summary["seeds"]))
    return f"Over {len(summary['seeds'])} seeds ({seeds}) the same profile gave test accuracy {means}."


def ood_sentence(rates: dict | None) -> str:
    if not rates:
        return "this run has no such signal (add it with `fashion-ensemble ood RUN_DIR`)."
    return (f"its threshold flags {rates['flag_rate']:.0%} of validation images; on the test images it flagged "
            f"{rates['correct_flagged']:.1%} of the correct predictions and {rates['wrong_flagged'] or 0:.1%} of the "
            "wrong ones; `python scripts/ood_check.py` measures it on noise, flat images, digits and photos.")


def main(run_dir: str, seeds_dir: str | None = None) -> int:
    run = RunFolder(run_dir)
    if not run.is_complete():
        print(f"{run_dir} is not a finished run folder", file=sys.stderr)
        return 2
    seeds = read_summary(seeds_dir) if seeds_dir else None
    seeds_sentence(run.config().profile, seeds)  # refuse a study of another profile before copying anything
    x, y = make_split(run.config().data, progress=False).test
    full = run.load().predict_proba(x)
    tmp = PRETRAINED.with_name("pretrained-new")  # renamed when complete
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in COPIED:
        if run.file(name).is_file():
            shutil.copy2(run.file(name), tmp / name)
    spec = json.loads(run.file("ensemble.json").read_text())
    for info in spec["members"].values():
        half(run.file(info["weights_file"]), tmp / info["weights_file"])
    shipped = RunFolder(tmp).load().predict_proba(x)
    same = int((shipped.argmax(1) == full.argmax(1)).sum())
    acc16, acc32 = float((shipped.argmax(1) == y).mean()), float((full.argmax(1) == y).mean())
    if same != len(y):  # a prediction moved: keep full precision
        for info in spec["members"].values():
            shutil.copy2(run.file(info["weights_file"]), tmp / info["weights_file"])
        note = (f"no — fp16 weights changed {len(y) - same} of {len(y)} test predictions ({acc16:.4f} against "
                f"{acc32:.4f}), so the weights are fp32.")
    else:
        note = (f"yes — every one of the {len(y):,} test predictions is the same as with the fp32 weights (accuracy "
                f"{acc32:.4f} both ways; largest probability difference {float(np.abs(shipped - full).max()):.1e}).")
    (tmp / "MODEL_CARD.md").write_text(card(run, {"note": note}, seeds))
    shutil.rmtree(PRETRAINED, ignore_errors=True)
    tmp.rename(PRETRAINED)
    size = sum(p.stat().st_size for p in PRETRAINED.iterdir())
    print(f"{PRETRAINED}: {size / 2**20:.1f} MiB; half precision: {note}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", help="a finished run folder")
    ap.add_argument("--seeds", metavar="DIR", help="a finished --seeds study of the same profile, quoted on the card")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        sys.exit(main(args.run_dir, args.seeds))
    except UserError as e:
        sys.exit(f"ship_model: {e}")
