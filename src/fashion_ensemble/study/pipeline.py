"""The study, as named steps: train the members → fit the ensemble on validation → score it → write the run folder.

    run_study(cfg)        a new run folder (resumable while it is written)
    resume_study(out)     go on with a stopped one from its checkpoints
    run_or_resume(...)    whichever a folder needs: kept when complete (multi-seed studies and ablations use it)
    evaluate(run)         re-score a saved run on its own test split
    revote_run(run, ...)  fit a saved run's vote again (another weighting), no training
    add_ood(run)          fit the "I don't know" signal of a run folder made before it existed
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fashion_ensemble.config import RunConfig, map_members
from fashion_ensemble.config.classes import CLASSES
from fashion_ensemble.data.sources import load_source
from fashion_ensemble.data.split import Split, class_changes, make_split
from fashion_ensemble.errors import Notice, UserError
from fashion_ensemble.members import build_model
from fashion_ensemble.model import ood
from fashion_ensemble.model.ensemble import Member, SoftVotingEnsemble
from fashion_ensemble.model.preprocess import as_photo, preprocess
from fashion_ensemble.model.runs import (
    CONFIG,
    ENSEMBLE,
    HISTORY,
    METRICS,
    REPORT,
    RunFolder,
    default_path,
    ensemble_spec,
    write_json,
)
from fashion_ensemble.study import planner, warmstart
from fashion_ensemble.study.report import write_report
from fashion_ensemble.study.scoring import predict, score
from fashion_ensemble.training import distributed
from fashion_ensemble.training.trainer import train_member


@dataclass(frozen=True)
class Options:
    """How a study runs (not what it computes: that is the RunConfig)."""
    device: torch.device  # from distributed.start
    data_dir: str | os.PathLike | None = None  # the IDX files' folder (default: data.resolve_data_dir)
    progress: bool = True  # per-epoch lines and progress bars (rank 0 only)
    tensorboard: bool = False  # TensorBoard logs in the run folder
    parallel: bool = False  # members in separate processes, the cores split between them
    began: float | None = None  # time.perf_counter() when the run started (its budget's clock), else when _study did
    deadlines_from: float | None = None  # time.time() when a run that plans its own budget started: its members'
    # deadlines count from it (None: a replay or a resume, which follow the plan as recorded)


def member_seed(seed: int, name: str) -> int:
    """Each member's own stream, stable under adding or removing other members."""
    return seed * 1_000_003 + zlib.crc32(name.encode()) % 1_000_003


def run_study(
    cfg: RunConfig,
    out: str | os.PathLike | None = None,
    *,
    data_dir=None,
    device: str | torch.device = "auto",
    progress: bool = True,
    tensorboard: bool = False,
    parallel: bool = False,
    restart: bool = False,
) -> Path:
    """Run the whole study and write its folder (default `runs/<profile>-<protocol>-seed<N>-<time>`); returns its path.

    The folder is written under a hidden temporary name, `.<name>.partial`, and renamed only when complete, so a failed
    or killed run never leaves one that looks finished. The temporary folder holds a checkpoint per member, saved after
    every epoch: `resume_study(out)` (`fashion-ensemble run --resume OUT`) goes on from there; a new run of the same
    folder is refused while that exists, unless `restart` says to delete it. With `parallel`, the members train at
    the same time in separate processes that split the cores."""
    began = time.perf_counter()
    plans_here = cfg.budget is not None and not cfg.budget.plan
    opts = Options(distributed.start(device), data_dir, progress, tensorboard, parallel, began,
                   distributed.broadcast_object(time.time()) if plans_here else None)
    folder = RunFolder(distributed.broadcast_object(str(out if out is not None else default_path(cfg))))
    if folder.path.exists():
        raise UserError(f"{folder.path} already exists; choose another --out or remove it")
    if not cfg.members:
        raise UserError("the configuration has no members to train")
    folder.path.parent.mkdir(parents=True, exist_ok=True)  # runs/, for the lock beside the folder
    with _writing(folder):
        split = make_split(cfg.data, data_dir, progress=progress)  # bad data fails here, before the folder is made
        # a budget becomes a schedule measured on this machine (a bad one fails here too); rank 0's on every rank
        cfg = planner.plan(cfg, split, opts.device, spent_s=time.perf_counter() - began)
        cfg = RunConfig.from_dict(distributed.broadcast_object(cfg.to_dict()))
        if progress and distributed.is_main():
            for line in planner.describe(cfg):
                print(line, flush=True)
        if distributed.is_main():
            facts = split.facts()
            for note in leaks(split, facts):
                warnings.warn(note, Notice, stacklevel=2)
            # a stopped run's checkpoints: refused unless `restart`
            folder.start(cfg, restart=restart, split_facts={"classes": list(split.classes), **facts})
            if progress:
                print(f"writing {folder.path} (if stopped: fashion-ensemble run --resume {folder.path})", flush=True)
        distributed.barrier()
        with _resume_hint(folder):
            return _study(cfg, split, folder, opts)


def resume_study(out: str | os.PathLike, *, data_dir=None, device: str | torch.device = "auto",
                 progress: bool = True, tensorboard: bool = False, parallel: bool = False) -> Path:
    """Go on with a run that was stopped (killed, interrupted, failed) from its members' last checkpoints. `out` is the
    run folder that `run_study` was writing (or its `.<name>.partial` folder). The result is the same as that of an
    uninterrupted run."""
    opts = Options(distributed.start(device), data_dir, progress, tensorboard, parallel)
    folder = RunFolder(out)
    if not folder.is_partial():
        if folder.is_complete():
            raise UserError(f"{folder.path} is complete; there is nothing to resume")
        raise UserError(f"nothing to resume at {folder.path}: {folder.partial} does not exist (a run keeps it "
                        "until it completes)")
    with _writing(folder):
        if not folder.is_partial():  # another process completed it while we waited for nothing: say so
            raise UserError(f"{folder.path} was completed by another process; there is nothing to resume")
        cfg = folder.config()
        if progress and distributed.is_main():
            print(f"resuming {folder.path}", flush=True)
        split = make_split(cfg.data, data_dir, progress=progress)
        started_on = folder.started_on()  # None: stopped by a version that did not record it
        if started_on is not None:
            changed = class_changes(started_on["classes"], split.classes)
            differences = [changed] if changed else split.compare(started_on)
            if differences:
                raise UserError(f"{folder.path}: its data changed since the run started ({'; '.join(differences)}); "
                                "resume it on the data it started on, or start over with --restart")
        with _resume_hint(folder):
            return _study(cfg, split, folder, opts)


@contextlib.contextmanager
def _resume_hint(folder: RunFolder):
    """A Ctrl-C during the study carries the command that goes on from the last epoch saved (the CLI prints it)."""
    try:
        yield
    except KeyboardInterrupt as e:
        e.add_note(f"the run is saved up to its last finished epoch in {folder.partial}; go on with: "
                   f"fashion-ensemble run --resume {folder.path}")
        raise


def leaks(split: Split, facts: dict) -> list[str]:
    """A sentence for each pair of parts that share images (exact copies; `facts`: the split's), since a score on
    such a test part is optimistic, and a user should hear it when the run starts, not only in its report."""
    what = {"train/val": "validation images {} of training images (early stopping and the vote see them)",
            "train/test": "test images {} of training images (the test score is optimistic)",
            "val/test": "test images {} of validation images (the vote was fit on them)"}
    return [f"{n:,} of the {len(split.val[1] if pair == 'train/val' else split.test[1]):,} "
            f"{what[pair].format('is a copy' if n == 1 else 'are copies')}; remove the duplicates from the data to "
            "score it fairly"
            for pair, n in facts["cross_split_duplicates"].items() if n]


def split_as_trained(folder: RunFolder, data_dir=None, progress: bool = False) -> Split:
    """The split a complete run was trained and scored on, read again from its source; refused, saying what
    differs, when the data changed since (classes, images or labels), so that a run is never scored on images it
    trained on. Folders written before data fingerprints are checked by classes and sizes alone, with a notice."""
    cfg = folder.config()
    classes = folder.ensemble_spec().get("classes", list(CLASSES))
    raw, now, left_out, origins = load_source(cfg.data, data_dir, progress)
    recorded = folder.metrics()["split"]
    changed = class_changes(classes, now)
    split = None if changed else make_split(cfg.data, raw=raw, classes=now, left_out=left_out, origins=origins)
    differences = [changed] if changed else split.compare(recorded)
    if differences:
        raise UserError(f"{folder.path}: its data changed since it was trained ({'; '.join(differences)}); score it "
                        f"on the data it was trained on ({cfg.data.source}), or train a new run on the new data")
    if "fingerprint" not in recorded:
        warnings.warn(f"{folder.path} was written before run folders recorded their data's fingerprint: only its "
                      "classes and split sizes could be checked against the data", Notice, stacklevel=2)
    return split


def _writing(folder: RunFolder):
    """The folder's lock, held by the process that writes it (rank 0 under torchrun)."""
    return folder.lock() if distributed.is_main() else contextlib.nullcontext()


def run_or_resume(cfg: RunConfig, out: str | os.PathLike, **options) -> Path:
    """A complete run folder at `out`: kept if it is one already, resumed if stopped, else run. `options`: as
    `run_study`'s."""
    folder = RunFolder(out)
    if folder.is_complete():
        return folder.path
    if folder.is_partial():
        return resume_study(out, **options)
    return run_study(cfg, out, **options)


def _study(cfg: RunConfig, split: Split, folder: RunFolder, opts: Options) -> Path:
    """The named steps, into the partial folder; then the folder is complete."""
    main = distributed.is_main()
    began = opts.began if opts.began is not None else time.perf_counter()
    writer = _tensorboard(folder) if opts.tensorboard and main else None
    if opts.parallel:
        train_in_parallel(cfg, opts.data_dir, opts.device, folder, opts.progress)
    training_began = time.perf_counter()
    deadlines = planner.deadlines(cfg, opts.deadlines_from) if opts.deadlines_from is not None else {}
    trained, history, timing = train_members(cfg, split, folder, opts.device, progress=opts.progress and main,
                                             writer=writer, deadlines=deadlines)
    training_here = time.perf_counter() - training_began
    if writer is not None:
        writer.close()
    if not main:
        return folder.path  # only rank 0 fits, scores and writes
    recorded = planner.stopped_by_time(cfg, history)
    if recorded != cfg:  # a deadline stopped a member: config.json says after which epoch, for an exact replay
        cfg = recorded
        folder.write_config(cfg)

    say = functools.partial(print, flush=True) if opts.progress else lambda *a: None  # no silent minutes
    say(f"validation: every member on {len(split.val[1]):,} images, then the voting weights")
    val = predict(trained, *split.val)  # every member once on validation: what fitting and scoring both use
    trained.fit(val.raw, val.labels, calibrate=cfg.ensemble.calibrate, weighting=cfg.ensemble.weights)
    folder.save_ensemble(trained, cfg.ensemble.weights)
    say(f"'I don't know' signal: the members' features on {min(len(split.train[1]), ood.FIT_IMAGES):,} training "
        f"and {len(split.val[1]):,} validation images")
    folder.save_ood(fit_ood(trained, split))
    # Scored as saved, through the public `load`, so that `load(run).predict_proba` reproduces these exactly.
    ensemble = folder.load(opts.device)
    say(f"test: scoring {len(split.test[1]):,} images (with bootstrap intervals and McNemar's tests)")
    metrics = study_metrics(cfg, split, ensemble, val)
    folder.write_metrics(metrics)
    say("report: tables and plots")
    # Training and scoring (the report's own seconds aside); a resumed run adds its earlier processes' epochs
    # (members trained in parallel processes overlap: there, the wall time of this process, which waited for them).
    elapsed = time.perf_counter() - began
    trained_s = sum(v for k, v in timing.items() if k.startswith("train_"))
    timing["total_s"] = elapsed if opts.parallel else elapsed - training_here + trained_s
    env = environment(opts.device)
    _write_report(folder.report, cfg, split, metrics, history, timing, env)
    folder.write_history(history, timing, env)
    return folder.complete()


def study_metrics(cfg: RunConfig, split: Split, ensemble: SoftVotingEnsemble, val) -> dict:
    """metrics.json of a fitted ensemble: the run's facts, then its scores on the test split (`val`: its members'
    predictions on validation, as `fit` used them)."""
    origins = None if split.origins is None else split.origins["test"]
    return {**run_facts(cfg, split, ensemble), **score(ensemble, predict(ensemble, *split.test), val, origins)}


def _write_report(path: Path, cfg: RunConfig, split: Split, metrics: dict, history: dict, timing: dict,
                  env: dict | None) -> None:
    gallery = split.test[0][[e["index"] for e in metrics["top_errors"]]]  # their pixels, for the report's gallery
    write_report(path, cfg, metrics, history, timing, env, gallery)


def train_members(cfg: RunConfig, split: Split, folder: RunFolder, device: torch.device, *, progress: bool = True,
                  writer=None, deadlines: dict[str, float] | None = None) -> tuple[SoftVotingEnsemble, dict, dict]:
    """Each member trained from its own seed (or its checkpoint in `folder`), one after the other, by its deadline
    when `deadlines` has one (a `time.time()`): (an unfitted equal-weight ensemble of them over the split's
    classes, {member: {"best_epoch", "epochs"}}, {"train_<member>_s": seconds})."""
    members, history, timing = {}, {}, {}
    for name, mcfg in cfg.members.items():
        start = time.perf_counter()
        model, epochs = _train(cfg, name, split, device, folder, progress, writer, (deadlines or {}).get(name))
        members[name] = Member.from_config(mcfg, model, device)
        history[name] = {"best_epoch": min(epochs, key=lambda e: e["val_loss"])["epoch"], "epochs": epochs}
        # every epoch's wall time, in whichever process ran it (a resumed run counts its first part too); at least
        # this process's own time (restoring a finished checkpoint, epochs from before wall_s was recorded)
        timing[f"train_{name}_s"] = max(sum(e.get("wall_s", e["seconds"]) for e in epochs),
                                        time.perf_counter() - start)
    return SoftVotingEnsemble(members, classes=split.classes), history, timing


def fit_ood(ensemble: SoftVotingEnsemble, split: Split, flag_rate: float = ood.FLAG_RATE) -> ood.Detector:
    """The "I don't know" signal (ood.py): the members' feature statistics on (a fixed sample of) the training
    images, its scale and threshold on validation."""
    x_train, y_train = split.train
    sample = ood.fit_sample(y_train)
    members = ensemble.members.items()
    return ood.fit({name: m.features(x_train[sample]) for name, m in members}, y_train[sample],
                   {name: m.features(split.val[0]) for name, m in members}, flag_rate)


def environment(device: torch.device) -> dict:
    """Where and with what the run was made: the CPU (and GPU), library versions, the code's commit, the command."""
    import platform
    import subprocess

    from fashion_ensemble import __version__
    from fashion_ensemble.model.inference import native_bf16

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        cpu = info.get("model name", cpu)
        if "cpu family" in info:  # "AMD EPYC" alone names several generations
            cpu += f" (family {info['cpu family']} model {info.get('model', '?')})"
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None  # an installed package, or no git
    return {"cpu": cpu, "cpu_threads": torch.get_num_threads(), "cpu_native_bf16": native_bf16(torch.device("cpu")),
            "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "fashion_ensemble": __version__, "commit": commit, "command": " ".join(sys.argv)}


def run_facts(cfg: RunConfig, split: Split, ensemble: SoftVotingEnsemble) -> dict:
    """What metrics.json says about the run before its scores: protocol, seed, classes, split, voting."""
    return {
        "protocol": cfg.data.protocol,
        "seed": cfg.seed,
        "profile": cfg.profile,
        "classes": list(ensemble.classes),
        "split": split.facts(),
        "weighting": cfg.ensemble.weights,
        "weights": ensemble.weights,
        "temperatures": {n: m.temperature for n, m in ensemble.members.items()},  # 1.0: members not calibrated
    }


def _tensorboard(folder: RunFolder):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(folder.tensorboard))


def _train(cfg: RunConfig, name: str, split: Split, device, folder: RunFolder, progress: bool, writer=None,
           deadline: float | None = None):
    """One member, from its own seed (or its checkpoint), stopped by `deadline` (a `time.time()`) or where its
    plan says a deadline stopped it: (model, per-epoch history)."""
    mcfg = cfg.members[name]
    seed = member_seed(cfg.seed, name)
    model = initial_model(cfg, name, len(split.classes), seed)
    plan = cfg.budget.plan.get(name) if cfg.budget is not None else None
    return train_member(model, split.train, split.val, mcfg.train, seed=seed, device=device, name=name,
                        progress=progress, writer=writer, checkpoint=folder.checkpoint(name), deadline=deadline,
                        stop_after=plan.stopped_at if plan is not None else None)


def initial_model(cfg: RunConfig, name: str, num_classes: int, seed: int) -> torch.nn.Module:
    """Member `name` before training: its network with initial weights from `seed`, or, with `--init-from`
    (`cfg.init`), the starting run's weights where their shapes agree."""
    m = cfg.members[name]
    torch.manual_seed(seed)
    model = build_model(m.kind, m.model, num_classes, cfg.data.input_shape)
    if cfg.init is not None:
        warmstart.start_weights(model, cfg, name)
    return model


def train_in_parallel(cfg: RunConfig, data_dir, device, folder: RunFolder, progress: bool) -> None:
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
    procs = {name: ctx.Process(target=_train_child, args=(cfg.to_dict(), name, data_dir, str(folder.path), threads))
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


def _train_child(cfg_dict: dict, name: str, data_dir, folder: str, threads: int) -> None:
    torch.set_num_threads(threads)
    cfg = RunConfig.from_dict(cfg_dict)
    _train(cfg, name, make_split(cfg.data, data_dir), torch.device("cpu"), RunFolder(folder), progress=False)


def evaluate(run_dir: str | os.PathLike, data_dir=None, device: str = "auto", photos: bool = False) -> dict:
    """Re-score a saved run on the test split its config describes: {name: metrics} for each member and the ensemble.
    Uses only the folder (through `load`) and the data set. With `photos`, each test image first makes the round trip
    a user's photo makes: saved as a 224×224 RGB JPEG, dark on white, then read back through `preprocess`."""
    folder = RunFolder(run_dir)
    ensemble = folder.load(distributed.resolve_device(device))
    data = folder.config().data
    x_te, y_te = split_as_trained(folder, data_dir).test
    if photos:
        x_te = np.stack([preprocess(as_photo(image), size=data.image_size, channels=data.channels) for image in x_te])
    return score(ensemble, predict(ensemble, x_te, y_te, ood_scores=False))["models"]


def revote_run(run_dir: str | os.PathLike, *, weighting: str | None = None, calibrate: bool | None = None,
           tta_shift: int | None = None, data_dir=None, device: str = "auto", progress: bool = False) -> dict:
    """Fit a complete run's vote again from its saved members, without training: another `weighting` (config.py's
    WEIGHTINGS), `calibrate`, or `tta_shift` for every member (None: the run's own). ensemble.json, config.json,
    metrics.json and the report become what a run with that config writes (the members' weights are the same: TTA
    and the vote do not change training); the weights files, the per-epoch history and the "I don't know" signal
    stay, and history.json records the change under "revoted". Returns the new metrics."""
    folder = RunFolder(run_dir)
    if not folder.is_complete():
        raise UserError(f"{folder.path} is not a complete run folder (no {METRICS}); only a finished run has a vote "
                        "to fit again")
    old = folder.config()
    changes = {k: v for k, v in (("weights", weighting), ("calibrate", calibrate)) if v is not None}
    cfg = old.replace(ensemble=replace(old.ensemble, **changes))  # an unknown weighting is refused here
    if tta_shift is not None:
        cfg = map_members(cfg, lambda m: replace(m, tta_shift=tta_shift))  # a bad shift is refused here

    device = distributed.resolve_device(device)
    with folder.lock():
        # The members under the new config (its TTA); the old vote's weights until `fit` replaces them.
        ensemble = folder.load(device, folder.ensemble_spec() | {"weighting": cfg.ensemble.weights}, cfg)
        split = split_as_trained(folder, data_dir, progress)
        val = predict(ensemble, *split.val, ood_scores=False)  # as the study's: fitting and scoring need no ood
        ensemble.fit(val.raw, val.labels, calibrate=cfg.ensemble.calibrate, weighting=cfg.ensemble.weights)
        spec = json.loads(json.dumps(ensemble_spec(ensemble, cfg.ensemble.weights, run_id=folder.run_id())))
        ensemble = folder.load(device, spec, cfg)  # scored as it will be saved, as a run is
        metrics = {**folder.metrics(), **study_metrics(cfg, split, ensemble, val)}
        history = folder.history()
        change = {"from": asdict(old.ensemble), "to": asdict(cfg.ensemble), "command": " ".join(sys.argv)}
        if cfg.members != old.members:
            change["tta_shift"] = {n: [old.members[n].tta_shift, m.tta_shift] for n, m in cfg.members.items()}
        # Every file that describes the vote, replaced as one unit: a kill at any point leaves the old run or the new.
        with folder.rewrite() as stage:
            write_json(stage / ENSEMBLE, spec)
            write_json(stage / CONFIG, cfg.to_dict())
            write_json(stage / METRICS, metrics)
            write_json(stage / HISTORY, {**history, "revoted": [*history.get("revoted", []), change]})
            _write_report(stage / REPORT, cfg, split, metrics, history["members"], history["timing"],
                          history.get("environment"))
    return metrics


def add_ood(run_dir: str | os.PathLike, data_dir=None, device: str = "auto", flag_rate: float = ood.FLAG_RATE
            ) -> dict:
    """Fit the "I don't know" signal of a complete run folder from its own split (as a run makes it now), and
    replace, as one unit, its ood.safetensors, the rates on the test split in metrics.json ("ood") and the report.
    Returns those rates."""
    folder = RunFolder(run_dir)
    if not folder.is_complete():
        raise UserError(f"{folder.path} is not a complete run folder (no {METRICS}): finish it with "
                        f"`fashion-ensemble run --resume {folder.path}`")
    ood.check_flag_rate(flag_rate)
    with folder.lock():  # not while a revote rewrites the same files
        ensemble = folder.load(distributed.resolve_device(device))
        split = split_as_trained(folder, data_dir)
        ensemble.ood = fit_ood(ensemble, split, flag_rate)
        x_te, y_te = split.test
        rates = score(ensemble, predict(ensemble, x_te, y_te))["ood"]
        metrics = {**folder.metrics(), "ood": rates}
        cfg, history = folder.config(), folder.history()
        with folder.rewrite() as stage:
            folder.save_ood(ensemble.ood, into=stage)
            write_json(stage / METRICS, metrics)
            _write_report(stage / REPORT, cfg, split, metrics, history["members"], history["timing"],
                          history.get("environment"))
    return rates
