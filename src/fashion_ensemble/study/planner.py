"""A time budget made into a schedule: each member's training step is measured on this machine, in the precision
it will train in (training/calibrate.py), and each member's recipe is stretched or shrunk by one factor so that the
whole study — both members, the vote, the "I don't know" fit, scoring, the report — ends within the time limit.

The recipe keeps its proportions: the members' shares of the time are those of their own epochs at the measured
speeds, and each member's augmented epochs and early-stopping patience stay the same fractions of its epochs, except
that a training part of fewer than SMALL_DATA_IMAGES images is augmented until LC3's fine-tuning phase and trains
its whole schedule, keeping its last weights (the small-data recipe: docs/budgets.md#small-data). Each member also
gets a deadline (`finish_by_s`): where the machine turns slower than it measured, training stops there and the rest
of the study still fits. The plan is written into the run's config (`budget.plan`, with the epoch a deadline
stopped a member after), so that a replay of config.json trains exactly as the run did.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from fashion_ensemble.config import MemberPlan, RunConfig, with_augment, with_train
from fashion_ensemble.data.split import Split
from fashion_ensemble.errors import UserError
from fashion_ensemble.members import build_model
from fashion_ensemble.model import ood
from fashion_ensemble.training.calibrate import StepCost, measure

SMALL_DATA_IMAGES = 10_000  # fewer training images than this are seen hundreds of times in a budget: augment longer
REPORT_S = 10.0  # the report's tables and plots, and writing the folder: a few seconds on 2 cores
SCORING_S = 5.0  # bootstrap intervals and McNemar's tests on the test part


def views(member) -> int:
    """Test-time views of one image: itself, its mirror, and four one-pixel shifts of each."""
    return (2 if member.tta_flip else 1) * (5 if member.tta_shift else 1)


def after_training_s(cfg: RunConfig, split: Split, costs: dict[str, StepCost]) -> float:
    """Seconds the study needs once its members are trained: validation and test predictions in every TTA view, the
    features the "I don't know" signal is fit on, scoring and the report."""
    n_val, n_test = len(split.val[1]), len(split.test[1])
    n_features = min(len(split.train[1]), ood.FIT_IMAGES) + n_val
    inference = sum(costs[name].eval_s / max(n_val, 1) * (views(m) * (n_val + n_test) + n_features)
                    for name, m in cfg.members.items())
    return inference + SCORING_S + REPORT_S


def epoch_s(cfg: RunConfig, name: str, split: Split, cost: StepCost) -> float:
    """One epoch of a member: its training steps, then a validation pass."""
    steps = math.ceil(len(split.train[1]) / cfg.members[name].train.batch_size)
    return steps * cost.step_s + cost.eval_s


def plan(cfg: RunConfig, split: Split, device: torch.device, spent_s: float = 0.0) -> RunConfig:
    """`cfg` with each member's epochs, augmented epochs and patience planned to end the study within
    `cfg.budget.time_limit_s`, `spent_s` of which have gone already (reading the data); unchanged when it has no
    budget or its plan is already made (a replay, a resume)."""
    budget = cfg.budget
    if budget is None or budget.plan:
        return cfg
    began = time.perf_counter()
    costs = {}
    for name, m in cfg.members.items():
        model = build_model(m.kind, m.model, len(split.classes), cfg.data.input_shape)
        costs[name] = measure(model, split.train, len(split.val[1]), m.train, device=device)
    spent_s += time.perf_counter() - began
    small = len(split.train[1]) < SMALL_DATA_IMAGES
    after = after_training_s(cfg, split, costs)
    available = budget.time_limit_s * (1 - budget.reserve_frac) - spent_s - after
    seconds = {n: epoch_s(cfg, n, split, c) for n, c in costs.items()}
    epochs = schedule(cfg, available, seconds, budget.max_epochs)
    if epochs is None:
        need = spent_s + after_training_s(cfg, split, costs) + sum(epoch_s(cfg, n, split, c) for n, c in costs.items())
        need /= 1 - budget.reserve_frac
        raise UserError(f"--time-limit {_minutes(budget.time_limit_s)} is too short for this data on this machine: "
                        f"one epoch of each member and the scoring need about {_minutes(need)} (measured: "
                        f"{_speeds(cfg, costs)}); give a longer --time-limit")
    planned = {}
    members = {}
    later = sum(epochs[n] * seconds[n] for n in cfg.members)  # planned training after each member's start
    for name, m in cfg.members.items():
        later -= epochs[name] * seconds[name]
        n = epochs[name]
        recipe = m.train
        share = min(recipe.augment.epochs / recipe.epochs, 1.0)
        if small:  # a few hundred images a class: augmentation "frozen" only for LC3's fine-tuning phase
            share = max(share, 1 - recipe.finetune_frac)
        augmented = n if share >= 1 else round(n * share)
        patience = n if small or recipe.patience >= recipe.epochs else max(recipe.patience,
                                                                           round(n * recipe.patience / recipe.epochs))
        c = costs[name]
        planned[name] = MemberPlan(epochs=n, augment_epochs=augmented, patience=patience, step_s=c.step_s,
                                   eval_s=c.eval_s, precision=c.precision,
                                   images_per_s=recipe.batch_size / c.step_s,
                                   finish_by_s=budget.time_limit_s - after - later,  # the reserve is its slack
                                   recipe="small data" if small else "profile")
        # small data: the whole schedule and its last weights (a few dozen validation images pick a noisy best epoch)
        members[name] = with_augment(with_train(m, epochs=n, patience=patience,
                                                restore_best=recipe.restore_best and not small), epochs=augmented)
    return cfg.replace(members=members, budget=dataclasses.replace(budget, plan=planned))


def schedule(cfg: RunConfig, available_s: float, epoch_seconds: dict[str, float], max_epochs: int
             ) -> dict[str, int] | None:
    """Each member's epochs: its recipe's epochs times one factor, so that they fill `available_s`; a member held at
    `max_epochs` leaves its time to the others. None when not even one epoch of each fits."""
    if available_s < sum(epoch_seconds.values()):
        return None
    recipe = {n: m.train.epochs for n, m in cfg.members.items()}
    fixed: dict[str, int] = {}
    while True:
        free = [n for n in recipe if n not in fixed]
        left = available_s - sum(fixed[n] * epoch_seconds[n] for n in fixed)
        factor = left / sum(recipe[n] * epoch_seconds[n] for n in free) if free else 0.0
        capped = [n for n in free if factor * recipe[n] >= max_epochs]
        if not capped:
            break
        fixed.update({n: max_epochs for n in capped})
    epochs = {**fixed, **{n: max(1, math.floor(factor * recipe[n])) for n in free}}
    while sum(epochs[n] * epoch_seconds[n] for n in epochs) > available_s:  # the floor of one epoch each can overrun
        longest = max((n for n in epochs if epochs[n] > 1), key=lambda n: epochs[n] * epoch_seconds[n])
        epochs[longest] -= 1
    return epochs


def deadlines(cfg: RunConfig, began: float) -> dict[str, float]:
    """Each planned member's deadline as a `time.time()`, for a run that began at `began` and made its plan."""
    plan = cfg.budget.plan if cfg.budget is not None else {}
    return {n: began + p.finish_by_s for n, p in plan.items() if p.finish_by_s is not None}


def stopped_by_time(cfg: RunConfig, history: dict) -> RunConfig:
    """`cfg` with the epoch each member's deadline stopped it after recorded in its plan (`stopped_at`), so that a
    replay of the run's config.json stops there too; unchanged when no deadline stopped one."""
    plan = dict(cfg.budget.plan) if cfg.budget is not None else {}
    for name, h in history.items():
        last = h["epochs"][-1]
        if name in plan and last.get("stop") == "time limit":
            plan[name] = dataclasses.replace(plan[name], stopped_at=last["epoch"])
    if not plan or plan == cfg.budget.plan:
        return cfg
    return cfg.replace(budget=dataclasses.replace(cfg.budget, plan=plan))


def describe(cfg: RunConfig) -> list[str]:
    """The plan in words, one line per member and one for the budget (the CLI prints them; the report shows them)."""
    budget = cfg.budget
    if budget is None or not budget.plan:
        return []
    small = any(p.recipe == "small data" for p in budget.plan.values())
    lines = [f"budget {_minutes(budget.time_limit_s)}: planned on this machine's measured speeds"
             + (f" (small data, under {SMALL_DATA_IMAGES:,} training images: the small-data recipe)" if small else "")]
    for name, p in budget.plan.items():
        lines.append(f"{name}: {p.epochs} epochs ({p.augment_epochs} augmented, patience {p.patience}) at "
                     f"{p.images_per_s:,.0f} img/s measured in {p.precision}")
    return lines


def _speeds(cfg: RunConfig, costs: dict[str, StepCost]) -> str:
    return ", ".join(f"{n} {cfg.members[n].train.batch_size / c.step_s:,.0f} img/s" for n, c in costs.items())


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
