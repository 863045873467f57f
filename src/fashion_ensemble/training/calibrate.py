"""What one member's training costs on this machine: a few real training steps (augmentation included) and one
validation pass, timed in the precision it will train in. The planner (study/planner.py) sizes schedules from it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from fashion_ensemble.config import TrainConfig
from fashion_ensemble.model.inference import choose_precision, predict_logits
from fashion_ensemble.training.augment import augment
from fashion_ensemble.training.trainer import optimizer, set_normalisation, to_tensor, train_step

WARMUP_STEPS = 3  # the first steps allocate and pick kernels: not timed
MIN_TIMED_S, MAX_TIMED_STEPS = 1.0, 30  # timed steps: at least 5 and a second of them, at most 30
EVAL_IMAGES = 2048  # a validation pass is timed on this many images and scaled to the whole part


@dataclass(frozen=True)
class StepCost:
    step_s: float  # one training step of cfg.batch_size images, augmentation included
    eval_s: float  # one pass over all `val_images` validation images
    precision: str  # "fp32" or "bf16", as training will choose


def measure(model: torch.nn.Module, train: tuple[np.ndarray, np.ndarray], val_images: int, cfg: TrainConfig, *,
            device: torch.device, seed: int = 0) -> StepCost:
    """Time `model` (untouched: a copy is trained) on batches of the training images `train`."""
    device = torch.device(device)
    precision, _ = choose_precision(cfg.precision, device)
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(train[1]), generator=gen)[: cfg.batch_size * 4].numpy()
    x, y = to_tensor(train[0][rows], device), torch.from_numpy(train[1][rows]).to(device)
    net = copy.deepcopy(model)
    set_normalisation(net, x)
    net.to(device).to(memory_format=torch.channels_last).train()
    opt = optimizer(net, cfg)  # training's own: the step timed is the step trained
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def step(i: int) -> None:
        idx = torch.arange(i * cfg.batch_size, (i + 1) * cfg.batch_size) % len(y)
        xb, yb = x[idx], y[idx]
        if cfg.augment.epochs > 0:
            xb = augment(xb, cfg.augment, gen)
        train_step(net, opt, sched, xb, yb, device=device, precision=precision, label_smoothing=cfg.label_smoothing)

    for i in range(WARMUP_STEPS):
        step(i)
    _sync(device)
    times: list[float] = []  # each step's own seconds: their median is the step, whatever a neighbour did meanwhile
    while len(times) < MAX_TIMED_STEPS and (len(times) < 5 or sum(times) < MIN_TIMED_S):
        began = time.perf_counter()
        step(len(times))
        _sync(device)
        times.append(time.perf_counter() - began)
    step_s = float(np.median(times))

    net.eval()
    probe = x[: min(len(x), EVAL_IMAGES)]
    predict_logits(net, probe[:64], precision=precision)  # warm-up
    began = time.perf_counter()
    predict_logits(net, probe, precision=precision)
    _sync(device)
    eval_s = (time.perf_counter() - began) * val_images / len(probe)
    return StepCost(step_s, eval_s, precision)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
