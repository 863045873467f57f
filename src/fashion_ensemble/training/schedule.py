"""The paper's "LC3" learning-rate schedule, stepped per batch: Linear warm-up, Cosine decay, Constant fine-tuning."""

from __future__ import annotations

import math


def lc3_factor(step: int, total: int, warmup_frac: float, finetune_frac: float, finetune_lr: float) -> float:
    """Multiplier of the peak rate at `step` (0-based) of `total` steps.

    [0, W): linear from 1/W up to 1;  [W, T-F): cosine from 1 down to `finetune_lr`;  [T-F, T): constant `finetune_lr`.
    """
    warmup = max(1, round(warmup_frac * total))
    finetune = round(finetune_frac * total)
    decay_end = max(warmup, total - finetune)
    if step < warmup:
        return (step + 1) / warmup
    if step >= decay_end:
        return finetune_lr
    progress = (step - warmup) / max(1, decay_end - warmup)
    return finetune_lr + (1.0 - finetune_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
