"""`fashion-ensemble labels RUN_DIR`: the images of every part whose given label the models doubt.

cleanlab's `find_label_issues` (confident learning, Northcutt et al. 2021) reads each image's label and the class
probabilities of a model that did not train on it:

- validation and test: the run's ensemble as saved (it trained on neither);
- train: K-fold cross-validation (`folds`, default 3): each member trained again from the run's config on K-1
  folds of the training part, validated on the run's validation part, and the fold left out predicted; the fold's
  members vote with the run's weights and temperatures. It costs K trainings on (K-1)/K of the images, about
  K-1 times the run's training (twice, at 3 folds), or `time_limit_s` in all when given (the planner sizes each
  fold's members to its share, as `run --time-limit` does).

The answer: one row per suspected image, ranked by cleanlab's label quality (lowest first): its part, index in the
part, origin (file), given label, suggested label (the models' choice) and its probability.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from fashion_ensemble.config import BudgetConfig, RunConfig
from fashion_ensemble.data.split import Split
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.ensemble import Member, SoftVotingEnsemble
from fashion_ensemble.model.runs import RunFolder
from fashion_ensemble.study import planner
from fashion_ensemble.study.pipeline import initial_model, member_seed, split_as_trained
from fashion_ensemble.training.trainer import train_member

PARTS = ("train", "val", "test")
MIN_PER_FOLD = 3  # images of each class a fold's training part needs (as a run's split does)
COLUMNS = ("part", "index", "origin", "given", "suggested", "suggested_probability", "quality")
GALLERY = 24  # images in the gallery: the most doubtful


def check_labels(run_dir: str | os.PathLike, csv_path: str | os.PathLike, **options) -> tuple[list[dict], Path]:
    """`label_issues` of a run, written to `csv_path` (COLUMNS) and, beside it, its gallery (the same name, .png),
    each file whole or not at all (written aside, then renamed): (the rows, the gallery's path)."""
    csv_path = Path(csv_path)
    probe = csv_path.with_name(csv_path.name + ".partial")
    try:  # a path that cannot be written is refused before the folds' minutes, not after
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write {csv_path}: {e.strerror}; give --csv a path in a folder you can write to"
                        ) from None
    rows, split = _label_issues(run_dir, **options)
    _write_csv(rows, csv_path)
    gallery = csv_path.with_suffix(".png")
    if rows:
        _write_gallery(rows[:GALLERY], np.stack([getattr(split, r["part"])[0][r["index"]] for r in rows[:GALLERY]]),
                       gallery)
    return rows, gallery


def label_issues(run_dir: str | os.PathLike, **options) -> list[dict]:
    """The suspected label errors of a complete run's data, every part: [{"part", "index", "origin", "given",
    "suggested", "suggested_probability", "quality"}], the most doubtful first. Options: `folds` (3),
    `time_limit_s` (None: the run's own epochs), `data_dir`, `device` ("cpu"), `progress` (True)."""
    return _label_issues(run_dir, **options)[0]


def _label_issues(run_dir, *, folds: int = 3, time_limit_s: float | None = None, data_dir=None,
                  device: str | torch.device = "cpu", progress: bool = True) -> tuple[list[dict], Split]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    folder = RunFolder(run_dir)
    if not folder.is_complete():
        raise UserError(f"{run_dir} is not a complete run folder (no metrics.json): train one with "
                        "`fashion-ensemble run`, or finish it with `run --resume`")
    if folds < 2:
        raise UserError(f"--folds must be 2 or more, got {folds}")
    split = split_as_trained(folder, data_dir, progress=progress)
    ensemble = folder.load(device)
    proba = {"train": cross_validated(folder.config(), split, ensemble, folds, time_limit_s, device, progress),
             "val": ensemble.predict_proba(split.val[0]), "test": ensemble.predict_proba(split.test[0])}
    rows = []
    for part in PARTS:
        labels, p = getattr(split, part)[1], proba[part]
        quality = get_label_quality_scores(labels, p)
        for i in find_label_issues(labels, p, return_indices_ranked_by="self_confidence"):
            suggested = int(p[i].argmax())
            rows.append({"part": part, "index": int(i), "origin": str(split.origins[part][i]),
                         "given": split.classes[int(labels[i])], "suggested": split.classes[suggested],
                         "suggested_probability": float(p[i, suggested]), "quality": float(quality[i])})
    return sorted(rows, key=lambda r: r["quality"]), split


def _write_csv(rows: list[dict], path: Path) -> None:
    import csv

    from fashion_ensemble.text import spreadsheet

    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r["part"], r["index"], spreadsheet(r["origin"]), spreadsheet(r["given"]),
                             spreadsheet(r["suggested"]), f"{r['suggested_probability']:.6f}", f"{r['quality']:.6f}"])
    os.replace(partial, path)


def _write_gallery(rows: list[dict], images: np.ndarray, path: Path) -> None:
    from fashion_ensemble.study.report import plot_misclassified, plt  # report chooses the file-only backend

    errors = [{"true": r["given"], "predicted": r["suggested"], "confidence": r["suggested_probability"],
               "origin": r["origin"]} for r in rows]
    with plt.rc_context({"text.parse_math": False}):  # class names are text, never mathtext
        fig = plot_misclassified(errors, images, title="Suspected label errors (given → suggested, probability)")
        partial = path.with_name(path.name + ".partial.png")
        fig.savefig(partial, dpi=100)
        plt.close(fig)
    os.replace(partial, path)


def cross_validated(cfg: RunConfig, split: Split, ensemble: SoftVotingEnsemble, folds: int,
                    time_limit_s: float | None, device, progress: bool) -> np.ndarray:
    """(N_train, classes) probabilities of each training image from members that never saw it."""
    from sklearn.model_selection import StratifiedKFold

    x, y = split.train
    counts = np.bincount(y, minlength=len(split.classes))
    if counts.min() * (folds - 1) / folds < MIN_PER_FOLD:
        thin = split.classes[int(counts.argmin())]
        raise UserError(f"--folds {folds}: the training part holds {counts.min()} images of {thin!r}, too few to "
                        f"leave a fold out; use fewer folds (2) or add images")
    out = np.zeros((len(y), len(split.classes)))
    cv = StratifiedKFold(folds, shuffle=True, random_state=cfg.seed)
    for k, (kept, left) in enumerate(cv.split(x, y), start=1):
        fold = dataclasses.replace(split, train=(x[kept], y[kept]), test=(x[left], y[left]), origins=None)
        fold_cfg = _fold_config(cfg, fold, folds, time_limit_s, device)
        raw = {}
        for name, m in fold_cfg.members.items():
            if progress:
                print(f"labels: fold {k}/{folds}, {name} on {len(kept):,} training images, {m.train.epochs} epochs",
                      flush=True)
            seed = member_seed(cfg.seed, name) + 1000 * k  # another start than the run's member
            model = initial_model(fold_cfg, name, len(split.classes), seed)  # a warm-started run's where it did
            model, _ = train_member(model, fold.train, fold.val, m.train, seed=seed, device=device, name=name,
                                    progress=False)
            raw[name] = Member.from_config(m, model, device).predict_proba(x[left], calibrated=False)
        out[left] = ensemble.vote({n: ensemble.members[n].calibrate(p) for n, p in raw.items()})
    return out


def _fold_config(cfg: RunConfig, fold: Split, folds: int, time_limit_s: float | None, device) -> RunConfig:
    """The run's members as it trained them (its planned epochs), or planned to a fold's share of `time_limit_s`."""
    if time_limit_s is None:
        return cfg
    share = time_limit_s / folds
    budget = BudgetConfig(share) if cfg.budget is None else dataclasses.replace(cfg.budget, time_limit_s=share, plan={})
    return planner.plan(cfg.replace(budget=budget), fold, torch.device(device))
