"""Training one member: AdamW (decoupled weight decay = the paper's L2), the LC3 schedule per batch, augmentation in
the first epochs only, early stopping on validation loss with the best weights restored, optionally a moving average
of the weights (EMA) or Lookahead's slow weights in their place, and a per-epoch history.

The whole training set lives on the device as one float tensor; a batch is an index into it (no DataLoader, no
per-sample Python). Measured on the 2-core CPU: the DS-CNN's step is ~45% BatchNorm/ReLU with BN after the
depthwise convs (dw_bn), about a third without; the convolutions take most of the rest.
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fashion_ensemble.config import TrainConfig
from fashion_ensemble.data.split import one_hot
from fashion_ensemble.members.layers import Normalize
from fashion_ensemble.model.inference import autocast, choose_precision, predict_logits, to_nchw
from fashion_ensemble.training import distributed
from fashion_ensemble.training.augment import alternating_flips, augment
from fashion_ensemble.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from fashion_ensemble.training.schedule import lc3_factor


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches, on (possibly augmented, smoothed) training targets
    train_accuracy: float
    val_loss: float  # cross-entropy against the true labels, no smoothing
    val_accuracy: float
    lr: float  # learning rate at the epoch's last step
    augmented: bool  # whether augmentation was on in this epoch
    precision: str  # "fp32" or "bf16": the autocast of this epoch's steps and validation (TrainConfig.precision)
    seconds: float  # the epoch's training steps
    images_per_s: float
    wall_s: float  # the whole epoch: steps, validation and bookkeeping (what a resumed run's timing adds up)
    stop: str | None = None  # why training ended after this epoch: "patience" (early stopping), "time limit" (the
    # next epoch would have ended after `deadline`), "plan" (a replay stopping where its run's time limit did)


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, S, S) greyscale or (N, S, S, C) colour → float32 (N, C, S, S) in [0, 1] on `device`."""
    x = torch.tensor(images, device=device)  # copies: IDX arrays are read-only
    return to_nchw(x).float().div_(255.0).contiguous()


def train_member(
    model: torch.nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    name: str = "model",
    progress: bool = True,
    writer=None,
    checkpoint: Path | None = None,
    deadline: float | None = None,
    stop_after: int | None = None,
) -> tuple[torch.nn.Module, list[dict]]:
    """Train `model` in place and return it (best validation-loss weights restored, unless `cfg.restore_best` is
    off) with its per-epoch history.

    With `checkpoint`, the whole training state is saved there after every epoch, and training resumes from it when it
    exists: the result is the same, bit for bit on CPU, as an uninterrupted run. Under torchrun (see distributed.py)
    each rank trains on its share of every batch.

    With `deadline` (a `time.time()`), training also ends after the epoch past which another one, at the mean
    epoch's wall time so far, would end after it; with `stop_after`, after that epoch. Neither changes the schedule
    (LC3 runs over `cfg.epochs`), so a run stopped by its deadline and its replay stopped after the same epoch are
    the same run."""
    device = torch.device(device)
    precision, why = choose_precision(cfg.precision, device)
    if progress:
        tqdm.write(f"{name}: training in {precision} ({why})")
    rank, world_size = distributed.world()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)  # shuffling and augmentation: one CPU stream, same on any device
    x_tr, y_tr = to_tensor(train[0], device), torch.from_numpy(train[1]).to(device)
    x_va, y_va = to_tensor(val[0], device), torch.from_numpy(val[1]).to(device)

    set_normalisation(model, x_tr)
    class_weight = balanced_weights(y_tr, model.num_classes) if cfg.class_weights == "balanced" else None
    model.to(device).to(memory_format=torch.channels_last)
    opt = optimizer(model, cfg)
    n = len(x_tr)
    steps_per_epoch = -(-n // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lc3_factor(s, total, cfg.warmup_frac, cfg.finetune_frac, cfg.finetune_lr)
    )

    # The weights' moving average (TrainConfig.ema_decay): a second copy, validated and kept instead of the model.
    ema = copy.deepcopy(model) if cfg.ema_decay > 0 else None
    # Lookahead's slow weights (TrainConfig.lookahead_k): likewise a second copy, validated and kept.
    slow = copy.deepcopy(model) if cfg.lookahead_k > 0 else None
    average = ema if ema is not None else slow  # what validation scores and training keeps instead of the model
    state = TrainState()
    best_state = None
    if checkpoint is not None and checkpoint.is_file():
        best_state, state = load_checkpoint(checkpoint, model=model, optimizer=opt, scheduler=sched, generator=gen,
                                            ema=ema, slow=slow)
    history = state.history
    net = distributed.wrap(model) if world_size > 1 else model

    for epoch in range(state.next_epoch, cfg.epochs + 1):
        if state.stopped:
            break
        augmented = epoch <= cfg.augment.epochs
        model.train()
        start = time.perf_counter()
        order = torch.randperm(n, generator=gen).to(device)
        mirror = alternating_flips(n, seed, epoch).to(device) if augmented and cfg.augment.flip_alternate else None
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        bar = tqdm(
            range(steps_per_epoch), desc=f"{name} {epoch}/{cfg.epochs}", leave=False,
            disable=None if progress else True,  # None: no bar when stderr is not a terminal (logs, CI)
            unit="batch", dynamic_ncols=True,
        )
        for i in bar:
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            if augmented:
                # the whole global batch on every rank: generators stay in step
                xb = augment(xb, cfg.augment, gen, None if mirror is None else mirror[idx])
            if world_size > 1:
                xb, yb = xb[rank::world_size], yb[rank::world_size]
            loss, logits = train_step(net, opt, sched, xb, yb, device=device, precision=precision,
                                      label_smoothing=cfg.label_smoothing, class_weight=class_weight)
            if ema is not None:
                update_ema(ema, model, cfg.ema_decay, step=sched.last_epoch)
            if slow is not None and sched.last_epoch % cfg.lookahead_k == 0:
                lookahead_sync(slow, model, cfg.lookahead_alpha)
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
            if not bar.disable and i % 25 == 0:  # .item() syncs a GPU: only for a visible bar, not every step
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}",
                                img_s=f"{seen * world_size / (time.perf_counter() - start):,.0f}")
        bar.close()
        distributed.broadcast_state(model)  # BatchNorm statistics differ per rank: all take rank 0's
        if ema is not None:
            distributed.broadcast_state(ema)
        if slow is not None:
            copy_buffers(slow, model)  # the slow weights are validated with the model's BatchNorm statistics
        seconds = time.perf_counter() - start
        kept = average if average is not None else model  # what validation scores and early stopping keeps
        val_logits = predict_logits(kept, x_va, precision=precision)
        record = EpochRecord(
            epoch=epoch,
            train_loss=loss_sum.item() / seen,
            train_accuracy=correct.item() / seen,
            val_loss=F.cross_entropy(val_logits, y_va).item(),
            val_accuracy=(val_logits.argmax(1) == y_va).float().mean().item(),
            lr=opt.param_groups[0]["lr"],
            augmented=augmented,
            precision=precision,
            seconds=seconds,
            images_per_s=n / seconds,
            wall_s=time.perf_counter() - start,
        )
        history.append(asdict(record))
        if progress:
            tqdm.write(
                f"{name} epoch {epoch:>2}/{cfg.epochs}  loss {record.train_loss:.4f}  val_loss {record.val_loss:.4f}"
                f"  val_acc {record.val_accuracy:.4f}  lr {record.lr:.2e}  {record.images_per_s:,.0f} img/s"
                + ("  [aug]" if augmented else "")
            )
        if writer is not None:
            for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s"):
                writer.add_scalar(f"{name}/{key}", getattr(record, key), epoch)
        if record.val_loss < state.best_loss:
            state.best_loss, state.bad_epochs = record.val_loss, 0
            best_state = copy.deepcopy(kept.state_dict())
        else:
            state.bad_epochs += 1
        record.stop = _stop(cfg, state, epoch, history, deadline, stop_after)
        history[-1]["stop"] = record.stop
        state.stopped = record.stop is not None and epoch < cfg.epochs
        state.next_epoch = epoch + 1
        if checkpoint is not None and rank == 0:
            save_checkpoint(checkpoint, model=model, best_state=best_state, optimizer=opt, scheduler=sched,
                            generator=gen, state=state, ema=ema, slow=slow)
    if best_state is not None and cfg.restore_best:
        model.load_state_dict(best_state)
    elif not cfg.restore_best and average is not None:
        model.load_state_dict(average.state_dict())  # the last weights, as validated: the average or slow ones
    model.eval()
    return model, history


def _stop(cfg: TrainConfig, state: TrainState, epoch: int, history: list[dict], deadline: float | None,
          stop_after: int | None) -> str | None:
    """Why training ends after `epoch`, or None: it goes on (the last epoch ends it without a reason)."""
    if epoch >= cfg.epochs:
        return None
    if state.bad_epochs >= cfg.patience:
        return "patience"
    if stop_after is not None and epoch >= stop_after:
        return "plan"
    if deadline is not None:
        walls = [e.get("wall_s", e["seconds"]) for e in history]
        late = time.time() + sum(walls) / len(walls) > deadline
        if distributed.broadcast_object(late):  # rank 0's clock decides for every rank
            return "time limit"
    return None


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, sched, xb: torch.Tensor, yb: torch.Tensor, *,
               device: torch.device, precision: str, label_smoothing: float,
               class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch: forward in `precision`, cross-entropy against the paper's one-hot targets
    (label-smoothed; each class's term times `class_weight` (classes,) when given), backward, AdamW, the LC3
    schedule's next rate. Returns (loss, logits (B, classes))."""
    xb = xb.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        logits = net(xb)
        loss = F.cross_entropy(logits.float(), one_hot(yb, logits.shape[1], smoothing=label_smoothing),
                               weight=class_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss, logits


def balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(classes,) N / (K · count) per class, scikit-learn's "balanced"; 0 for a class with no image."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), 0.0)


def optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups`. fused: one kernel per step for all parameters instead of a dozen passes over them
    (faster: docs/performance.md)."""
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW's parameter groups: every parameter at `cfg.lr`, except, when `cfg.bn_frozen_scale` or `cfg.bn_bias_lr`
    asks for it, BatchNorm's scales (left out, untrained) and biases (their own rate, same decay per step). The
    main group is first: its rate is the one the history records."""
    if not cfg.bn_frozen_scale and cfg.bn_bias_lr == 1.0:
        return [{"params": list(model.parameters())}]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine]
    if cfg.bn_frozen_scale:
        for m in norms:
            m.weight.requires_grad_(False)
    biases = [m.bias for m in norms]
    special = {id(p) for m in norms for p in (m.weight, m.bias)}
    rest = [p for p in model.parameters() if id(p) not in special]
    scales = [] if cfg.bn_frozen_scale else [m.weight for m in norms]
    return [{"params": rest + scales},
            {"params": biases, "lr": cfg.lr * cfg.bn_bias_lr, "weight_decay": cfg.weight_decay / cfg.bn_bias_lr}]


@torch.no_grad()
def lookahead_sync(slow: torch.nn.Module, fast: torch.nn.Module, alpha: float) -> None:
    """Lookahead's k-th step: slow ← slow + α·(fast − slow), then fast ← slow, over the weights only (BatchNorm
    statistics stay the fast model's). AdamW's moments carry on, as in the paper's default."""
    slow_w, fast_w = list(slow.parameters()), list(fast.parameters())
    torch._foreach_lerp_(slow_w, fast_w, alpha)
    torch._foreach_copy_(fast_w, slow_w)


@torch.no_grad()
def copy_buffers(to: torch.nn.Module, source: torch.nn.Module) -> None:
    """`to`'s buffers (BatchNorm statistics, normalisation) ← `source`'s."""
    torch._foreach_copy_(list(to.buffers()), list(source.buffers()))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema ← d·ema + (1 - d)·model over weights and float buffers (BatchNorm statistics); integer buffers are copied.
    d = min(decay, (1 + step) / (10 + step)), TensorFlow's ramp: the first steps' random weights fade fast."""
    d = min(decay, (1 + step) / (10 + step))
    pairs = list(zip(itertools.chain(ema.parameters(), ema.buffers()),
                     itertools.chain(model.parameters(), model.buffers())))
    floats = [(e, m) for e, m in pairs if e.is_floating_point()]
    torch._foreach_lerp_([e for e, _ in floats], [m for _, m in floats], 1 - d)
    for e, m in pairs:
        if not e.is_floating_point():
            e.copy_(m)


def set_normalisation(model: torch.nn.Module, x_train: torch.Tensor) -> None:
    """Store the training images' mean and std in the model's Normalize layer (training statistics only)."""
    for module in model.modules():
        if isinstance(module, Normalize):
            module.mean.fill_(x_train.mean().item())
            module.std.fill_(x_train.std().item())
