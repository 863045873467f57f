"""Several seeds: each a full run of the study in its own folder, then every metric's mean ± std across them.
`train` is the one way in from Python (start, resume or keep, as the CLI does); `run` is the `run` command: one run
folder, or a multi-seed study folder; `revote`, the `revote` command, fits the vote of either again.

    OUT/seed0/, OUT/seed1/, ...   complete run folders (each resumable on its own, as `run_study` writes them)
    OUT/summary.json              {"seeds", "runs", "models": {name: {metric: {"mean", "std", "values"}}}, ...}
    OUT/summary.md                the headline table, paper against ours as mean ± std, and each seed's numbers

Running it again with the same OUT skips the seeds that are complete and resumes a stopped one, so a long multi-seed
study survives interruptions too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fashion_ensemble.config import PROFILES, RunConfig, profile, read_config_file
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.runs import RunFolder, default_path, read_json, write_json
from fashion_ensemble.study import pipeline
from fashion_ensemble.study.pipeline import run_or_resume, run_study
from fashion_ensemble.study.report import write_summary
from fashion_ensemble.training import distributed

SCALARS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "log_loss", "errors")  # ECE: from calibration
SUMMARY, SUMMARY_MD = "summary.json", "summary.md"


def train(config: RunConfig | str = "default", out: str | os.PathLike | None = None, *, seeds: int = 1,
          restart: bool = False, **options) -> Path:
    """Train the study, the one way in from Python, as `fashion-ensemble run` does; returns the run folder (or, with
    `seeds` > 1, the study folder of seeds config.seed .. config.seed + seeds - 1).

    `config`: a RunConfig, a profile name ("quick", "default", "best", "paper") or a config JSON file (a run
    folder's config.json). At `out` (default: a new runs/<profile>-<protocol>-seed<N>-<time>), a complete run of
    this config is kept as it is, a stopped one is resumed from its checkpoints (`restart`: started over instead),
    and a folder of another config is refused. `options`: data_dir, device ("auto"), progress (True), tensorboard,
    parallel (members in separate processes)."""
    cfg = config if isinstance(config, RunConfig) else (
        profile(config) if config in PROFILES else read_config_file(config))
    if seeds > 1 or out is None or restart:
        return run(cfg, out, seeds=seeds, restart=restart, **options)
    folder = RunFolder(out)
    if folder.is_complete() or folder.is_partial():
        if folder.config().to_dict() != cfg.to_dict():
            state = "complete" if folder.is_complete() else "stopped"
            raise UserError(f"{folder.path} holds a {state} run of another configuration; give another out (or, "
                            "for a stopped run, restart=True to start it over with this one)")
        return pipeline.run_or_resume(cfg, out, **options)
    return pipeline.run_study(cfg, out, **options)


def run(cfg: RunConfig, out: str | os.PathLike | None = None, *, seeds: int = 1, restart: bool = False,
        **options) -> Path:
    """One run of `cfg` (`run_study`; `restart` deletes a stopped one's checkpoints), or with `seeds` > 1 a study
    of seeds cfg.seed .. cfg.seed + seeds - 1 (`run_seeds`, which resumes a stopped seed). `options` go to
    `run_study`."""
    if seeds > 1:
        if restart:
            raise UserError("--restart starts one run over; a multi-seed study resumes its stopped seed instead "
                            "(delete that seed's .partial folder to start it over)")
        return run_seeds(cfg, list(range(cfg.seed, cfg.seed + seeds)), out, **options)
    return run_study(cfg, out, restart=restart, **options)


def run_seeds(cfg: RunConfig, seeds: list[int], out: str | os.PathLike | None = None, **options) -> Path:
    """A full run per seed under `out`, then summary.json and summary.md. `options` go to `run_study`."""
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise UserError(f"a multi-seed study needs two or more different seeds, got {seeds}")
    out = Path(out) if out is not None else default_path(cfg, seeds=f"seeds{seeds[0]}-{seeds[-1]}")
    out.mkdir(parents=True, exist_ok=True)
    runs = [run_or_resume(cfg.replace(seed=seed), out / f"seed{seed}", **options) for seed in seeds]
    if not distributed.is_main():
        return out  # rank 0 writes the runs, so it summarises them
    summary = summarize(runs)
    write_json(out / SUMMARY, summary)
    write_summary(out / SUMMARY_MD, summary)
    return out


def revote(out: str | os.PathLike, **options) -> list[Path]:
    """`pipeline.revote_run` of a run folder, or of every seed of a multi-seed study folder (`options` go to it), whose
    summary is then written again. Returns the run folders revoted."""
    out = Path(out)
    if not (out / SUMMARY).is_file():
        pipeline.revote_run(out, **options)
        return [out]
    runs = [out / name for name in read_summary(out)["runs"]]
    for run_dir in runs:
        pipeline.revote_run(run_dir, **options)
    summary = summarize(runs)
    write_json(out / SUMMARY, summary)
    write_summary(out / SUMMARY_MD, summary)
    return runs


def read_summary(out: str | os.PathLike) -> dict:
    """A multi-seed study's summary.json."""
    return read_json(Path(out) / SUMMARY)


def summarize(run_dirs: list[Path]) -> dict:
    """Mean, sample std (ddof 1) and the per-seed values of each headline metric, per model, over the runs."""
    metrics = [RunFolder(d).metrics() for d in run_dirs]
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
        "profile": first["profile"], "protocol": first["protocol"], "classes": first["classes"],
        "seeds": [m["seed"] for m in metrics], "runs": [Path(d).name for d in run_dirs],
        "models": models,
        "significance": {k: {"p_values": [m["significance"][k]["p_value"] for m in metrics],
                             # +1: the ensemble was right on more of the images where the two disagree; -1: fewer
                             "ahead": [int(np.sign(m["significance"][k]["a_right_b_wrong"]
                                                   - m["significance"][k]["a_wrong_b_right"])) for m in metrics]}
                         for k in first["significance"]},
        "weights": [m["weights"] for m in metrics],
        # A run's wall time (None for runs made before it was recorded)
        "run_seconds": [RunFolder(d).history()["timing"].get("total_s") for d in run_dirs],
    }
