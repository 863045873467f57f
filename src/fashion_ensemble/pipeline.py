"""The study, end to end: data → members trained independently → soft-voting ensemble → metrics → report → run folder.

`run_study` is what `fashion-ensemble run` calls; `evaluate` re-scores a saved run on its own test split.
"""

from __future__ import annotations

import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .config import RunConfig
from .data import CLASSES, make_split
from .ensemble import Member, SoftVotingEnsemble, soft_vote, temperature_scale, tune_weights
from .errors import UserError
from .metrics import calibration, classification_metrics, fit_temperature, mcnemar_exact
from .models import build_model
from .preprocess import as_photo, preprocess
from .report import write_report
from .runs import load, read_json, save_members, write_json
from .train import train_member


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; choose auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU here; use --device cpu or auto")
    return device


def member_seed(seed: int, name: str) -> int:
    """Each member's own stream, stable under adding or removing other members."""
    return seed * 1_000_003 + zlib.crc32(name.encode()) % 1_000_003


def default_run_dir(cfg: RunConfig, root: str | os.PathLike = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{cfg.profile}-{cfg.data.protocol}-seed{cfg.seed}-{stamp}"


def run_study(
    cfg: RunConfig,
    out: str | os.PathLike | None = None,
    *,
    data_dir=None,
    device: str | torch.device = "auto",
    progress: bool = True,
    tensorboard: bool = False,
    parallel: bool = False,
) -> Path:
    """Run the whole study and write its folder; returns its path.

    The folder is written under a hidden temporary name, `.<name>.partial`, and renamed only when complete, so a failed
    or killed run never leaves one that looks finished. The temporary folder holds a checkpoint per member, saved after
    every epoch: `resume_study(out)` (`fashion-ensemble run --resume OUT`) goes on from there. With `parallel`, the
    members train at the same time in separate processes that split the cores."""
    device = distributed.setup(resolve_device(device))
    out = Path(distributed.broadcast_object(str(out if out is not None else default_run_dir(cfg))))
    if out.exists():
        raise UserError(f"{out} already exists; choose another --out or remove it")
    if not cfg.members:
        raise UserError("the configuration has no members to train")
    split = make_split(cfg.data, data_dir)  # bad data fails here, before any folder is made
    tmp = partial_dir(out)
    if distributed.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_json(tmp / "config.json", cfg.to_dict())
    distributed.barrier()
    return _study(cfg, split, out, tmp, data_dir, device, progress, tensorboard, parallel)


def resume_study(out: str | os.PathLike, *, data_dir=None, device: str | torch.device = "auto",
                 progress: bool = True, tensorboard: bool = False, parallel: bool = False) -> Path:
    """Go on with a run that was stopped (killed, interrupted, failed) from its members' last checkpoints. `out` is the
    run folder that `run_study` was writing (or its `.<name>.partial` folder). The result is the same as that of an
    uninterrupted run."""
    device = distributed.setup(resolve_device(device))
    out = Path(out)
    if out.name.startswith(".") and out.name.endswith(".partial"):
        out = out.with_name(out.name[1 : -len(".partial")])
    tmp = partial_dir(out)
    if not tmp.is_dir():
        if (out / "metrics.json").is_file():
            raise UserError(f"{out} is complete; there is nothing to resume")
        raise UserError(f"nothing to resume at {out}: {tmp} does not exist (a run keeps it until it completes)")
    cfg = RunConfig.from_dict(read_json(tmp / "config.json"))
    split = make_split(cfg.data, data_dir)
    return _study(cfg, split, out, tmp, data_dir, device, progress, tensorboard, parallel)


def partial_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _study(cfg, split, out, tmp, data_dir, device, progress, tensorboard, parallel) -> Path:
    try:
        _run_into(cfg, split, tmp, data_dir, device, progress, tensorboard, parallel)
        if distributed.is_main():
            shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
            tmp.rename(out)
    finally:
        distributed.teardown()
    return out


def _run_into(cfg: RunConfig, split, run_dir: Path, data_dir, device, progress: bool, tensorboard: bool,
              parallel: bool) -> None:
    main = distributed.is_main()
    began = time.perf_counter()
    writer = None
    if tensorboard and main:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        writer = SummaryWriter(str(run_dir / "tensorboard"))

    checkpoints = run_dir / "checkpoints"
    if parallel:
        train_in_parallel(cfg, data_dir, device, checkpoints, progress)
    members, history, timing = {}, {}, {}
    for name, mcfg in cfg.members.items():
        start = time.perf_counter()
        model, epochs = _train(cfg, name, split, device, checkpoints, progress and main, writer)
        members[name] = Member(mcfg.kind, model, device, tta_flip=mcfg.tta_flip)
        best = min(epochs, key=lambda e: e["val_loss"])["epoch"]
        history[name] = {"best_epoch": best, "epochs": epochs}
        timing[f"train_{name}_s"] = time.perf_counter() - start
    if writer is not None:
        writer.close()
    if not main:
        return  # only rank 0 scores and writes

    # Voting weights from the members' validation probabilities.
    x_va, y_va = split.val
    x_te, y_te = split.test
    names = list(members)
    val_p = {n: m.predict_proba(x_va) for n, m in members.items()}
    raw_val_p = dict(val_p)
    if cfg.ensemble.calibrate:  # each member's temperature from its own validation probabilities, before voting
        for n, m in members.items():
            m.temperature = fit_temperature(y_va, val_p[n])
            val_p[n] = temperature_scale(val_p[n], m.temperature)
    equal = np.full(len(names), 1.0 / len(names))
    tuned = tune_weights([val_p[n] for n in names], y_va)
    weights = tuned if cfg.ensemble.weights == "tuned" else equal
    save_members(run_dir, members, dict(zip(names, weights.tolist())), {"weighting": cfg.ensemble.weights})

    # Score what was saved, through the public `load`, so that `load(run).predict_proba` reproduces these exactly.
    ensemble = load(run_dir, device=device)
    test_p = {n: m.predict_proba(x_te) for n, m in ensemble.members.items()}
    models = {n: classification_metrics(y_te, test_p[n]) for n in names}
    ens_p = ensemble.vote(test_p)  # exactly what ensemble.predict_proba(x_te) returns, without re-running members
    models["ensemble"] = classification_metrics(y_te, ens_p)
    significance = {  # McNemar's exact test, ensemble (a) against each member (b), on the test images
        f"ensemble_vs_{n}": mcnemar_exact(y_te, ens_p.argmax(1), test_p[n].argmax(1)) for n in names
    }
    val_all = {**val_p, "ensemble": ensemble.vote(val_p)}
    val_accuracy = {n: float((p.argmax(1) == y_va).mean()) for n, p in val_all.items()}

    def vote(probas, w):
        return soft_vote([probas[n] for n in names], w)

    alternatives = {  # both weightings side by side, whichever the ensemble uses
        "ensemble_equal_weights": _summary(classification_metrics(y_te, vote(test_p, equal))),
        "ensemble_tuned_weights": _summary(classification_metrics(y_te, vote(test_p, tuned))),
        "tuned_weights": dict(zip(names, tuned.tolist())),
    }
    # The members' test probabilities without their temperatures (softmax(log p · T) undoes them).
    raw_test_p = ({n: temperature_scale(test_p[n], 1 / ensemble.members[n].temperature) for n in names}
                  if cfg.ensemble.calibrate else test_p)
    if cfg.ensemble.calibrate:  # the same alternatives without the members' temperatures
        raw_tuned = tune_weights([raw_val_p[n] for n in names], y_va)
        alternatives |= {
            "uncalibrated_ensemble_equal_weights": _summary(classification_metrics(y_te, vote(raw_test_p, equal))),
            "uncalibrated_ensemble_tuned_weights": _summary(classification_metrics(y_te, vote(raw_test_p, raw_tuned))),
            "uncalibrated_tuned_weights": dict(zip(names, raw_tuned.tolist())),
        }

    metrics = {
        "protocol": cfg.data.protocol,
        "seed": cfg.seed,
        "profile": cfg.profile,
        "classes": list(CLASSES),
        "split": split.facts(),
        "weighting": cfg.ensemble.weights,
        "weights": ensemble.weights,
        "temperatures": {n: m.temperature for n, m in ensemble.members.items()},  # 1.0: members not calibrated
        "val_accuracy": val_accuracy,
        "models": models,
        "significance": significance,
        # Before and after a temperature fit on validation, scored on test: each member from its raw outputs (so
        # "after" is what it votes with when the profile calibrates it), the ensemble as it votes.
        "calibration": {**{n: calibration(y_va, raw_val_p[n], y_te, raw_test_p[n]) for n in names},
                        "ensemble": calibration(y_va, val_all["ensemble"], y_te, ens_p)},
        "alternatives": alternatives,
    }
    write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir, cfg, metrics, history)
    timing["total_s"] = time.perf_counter() - began  # training, scoring and report (of this process, if resumed)
    write_json(run_dir / "history.json", {"members": history, "timing": timing})


def _train(cfg: RunConfig, name: str, split, device, checkpoints: Path, progress: bool, writer=None):
    """One member, from its own seed (or its checkpoint): (model, per-epoch history)."""
    mcfg = cfg.members[name]
    seed = member_seed(cfg.seed, name)
    torch.manual_seed(seed)  # initial weights
    model = build_model(mcfg.kind, mcfg.model)
    return train_member(model, split.train, split.val, mcfg.train, seed=seed, device=device, name=name,
                        progress=progress, writer=writer, checkpoint=checkpoints / f"{name}.safetensors")


def train_in_parallel(cfg: RunConfig, data_dir, device, checkpoints: Path, progress: bool) -> None:
    """Train the members at the same time, one process each, the cores split between them. Each leaves its finished
    checkpoint, from which the study then restores it. With fewer cores than members, training stays sequential."""
    cores = os.cpu_count() or 1
    names = list(cfg.members)
    if distributed.world()[1] > 1 or cores < len(names) or device.type != "cpu":
        if progress:
            print(f"--parallel: {len(names)} members on {cores} cores ({device.type}, world "
                  f"{distributed.world()[1]}): training them one after the other instead", flush=True)
        return
    threads = cores // len(names)
    ctx = torch.multiprocessing.get_context("spawn")
    procs = {name: ctx.Process(target=_train_child, args=(cfg.to_dict(), name, data_dir, str(checkpoints), threads))
             for name in names}
    if progress:
        print(f"training {', '.join(names)} in parallel: {len(names)} processes, {threads} threads each", flush=True)
    for proc in procs.values():
        proc.start()
    try:
        for proc in procs.values():
            proc.join()
    finally:
        for proc in procs.values():
            if proc.is_alive():
                proc.kill()
    failed = {name: proc.exitcode for name, proc in procs.items() if proc.exitcode != 0}
    if failed:
        raise UserError(f"training failed in the member processes: {failed} (exit codes); "
                        "run without --parallel to see the error")


def _train_child(cfg_dict: dict, name: str, data_dir, checkpoints: str, threads: int) -> None:
    torch.set_num_threads(threads)
    cfg = RunConfig.from_dict(cfg_dict)
    _train(cfg, name, make_split(cfg.data, data_dir), torch.device("cpu"), Path(checkpoints), progress=False)


def _summary(m: dict) -> dict:
    return {k: m[k] for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "log_loss")}


def evaluate(run_dir: str | os.PathLike, data_dir=None, device: str = "auto", photos: bool = False) -> dict:
    """Re-score a saved run on the test split its config describes: {name: metrics} for each member and the ensemble.
    Uses only the folder (through `load`) and the data set. With `photos`, each test image first makes the round trip
    a user's photo makes: saved as a 224×224 RGB JPEG, dark on white, then read back through `preprocess`."""
    run_dir = Path(run_dir)
    ensemble: SoftVotingEnsemble = load(run_dir, device=resolve_device(device))
    cfg = RunConfig.from_dict(read_json(run_dir / "config.json"))
    x_te, y_te = make_split(cfg.data, data_dir).test
    if photos:
        x_te = np.stack([preprocess(as_photo(image)) for image in x_te])
    results = {name: classification_metrics(y_te, m.predict_proba(x_te)) for name, m in ensemble.members.items()}
    results["ensemble"] = classification_metrics(y_te, ensemble.predict_proba(x_te))
    return results
