"""Several seeds: each a full run of the study in its own folder, then every metric's mean ± std across them.

    OUT/seed0/, OUT/seed1/, ...   complete run folders (each resumable on its own, as `run_study` writes them)
    OUT/summary.json              {"seeds", "runs", "models": {name: {metric: {"mean", "std", "values"}}}, ...}
    OUT/summary.md                the headline table, paper against ours as mean ± std, and each seed's numbers

Running it again with the same OUT skips the seeds that are complete and resumes a stopped one, so a long multi-seed
study survives interruptions too.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from . import pipeline
from .config import RunConfig
from .errors import UserError
from .report import write_summary
from .runs import write_json

SCALARS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "log_loss", "errors")  # ECE: from calibration


def default_study_dir(cfg: RunConfig, seeds: list[int], root: str | os.PathLike = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{cfg.profile}-{cfg.data.protocol}-seeds{seeds[0]}-{seeds[-1]}-{stamp}"


def run_seeds(cfg: RunConfig, seeds: list[int], out: str | os.PathLike | None = None, **options) -> Path:
    """A full run per seed under `out`, then summary.json and summary.md. `options` go to `run_study`."""
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise UserError(f"a multi-seed study needs two or more different seeds, got {seeds}")
    out = Path(out) if out is not None else default_study_dir(cfg, seeds)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in seeds:
        run_dir = out / f"seed{seed}"
        if not (run_dir / "metrics.json").is_file():  # a complete one, from an earlier invocation, is kept
            if pipeline.partial_dir(run_dir).is_dir():
                pipeline.resume_study(run_dir, **options)
            else:
                pipeline.run_study(cfg.replace(seed=seed), run_dir, **options)
        runs.append(run_dir)
    summary = summarize(runs)
    write_json(out / "summary.json", summary)
    write_summary(out, summary)
    return out


def summarize(run_dirs: list[Path]) -> dict:
    """Mean, sample std (ddof 1) and the per-seed values of each headline metric, per model, over the runs."""
    metrics = [json.loads((Path(d) / "metrics.json").read_text()) for d in run_dirs]
    first = metrics[0]
    if any(m["protocol"] != first["protocol"] or m["profile"] != first["profile"] for m in metrics):
        raise UserError("the runs to summarise mix profiles or protocols")

    def stats(values):
        v = np.asarray(values, dtype=np.float64)
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": v.tolist()}

    models = {name: {k: stats([m["models"][name][k] for m in metrics]) for k in SCALARS}
              for name in first["models"]}
    for name in models:
        # Before and after temperature scaling, as in each run's calibration table (a member: from its raw outputs).
        models[name]["ece"] = stats([m["calibration"][name]["ece"] for m in metrics])
        models[name]["ece_scaled"] = stats([m["calibration"][name]["ece_scaled"] for m in metrics])
        models[name]["temperature"] = stats([m["calibration"][name]["temperature"] for m in metrics])
    return {
        "profile": first["profile"], "protocol": first["protocol"],
        "seeds": [m["seed"] for m in metrics], "runs": [Path(d).name for d in run_dirs],
        "models": models,
        "significance": {k: {"p_values": [m["significance"][k]["p_value"] for m in metrics]}
                         for k in first["significance"]},
        "weights": [m["weights"] for m in metrics],
        "run_seconds": [_run_seconds(d) for d in run_dirs],
    }


def _run_seconds(run_dir: Path) -> float | None:
    """A run's wall time from its history.json (None for runs made before it was recorded)."""
    timing = json.loads((Path(run_dir) / "history.json").read_text()).get("timing", {})
    return timing.get("total_s")
