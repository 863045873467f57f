"""The ablation's levers: each flips one choice of a `RunConfig` against what the profile does (one the profile
uses is switched off, one it does not use is switched on). Training levers are config edits, run again by
`ablate`; inference levers re-combine a trained run's members (ablation.py). Under a budget every lever's run is
planned to the same time limit, so the comparison is accuracy at equal time (a wider CNN gets fewer epochs).
Imports only the config, so that the CLI can list them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fashion_ensemble.config import CNNConfig, MemberConfig, RunConfig, map_members, with_augment, with_train


def _cnn(cfg: RunConfig) -> MemberConfig:
    return next(m for m in cfg.members.values() if m.kind == "cnn")


def _model(m: MemberConfig, **changes) -> MemberConfig:
    return dataclasses.replace(m, model=dataclasses.replace(m.model, **changes))


def label_smoothing(cfg):
    on = any(m.train.label_smoothing > 0 for m in cfg.members.values())
    return ("without label smoothing" if on else "label smoothing 0.1",
            map_members(cfg, lambda m: with_train(m, label_smoothing=0.0 if on else 0.1)))


def strong_label_smoothing(cfg):
    return ("label smoothing 0.2 for every member (airbench's)",
            map_members(cfg, lambda m: with_train(m, label_smoothing=0.2)))


def alternate_flip(cfg):
    return ("flips that alternate by epoch instead of a coin each epoch (airbench's)",
            map_members(cfg, lambda m: with_augment(m, flip_alternate=True)))


def cnn_augment_to_finetune(cfg):
    def longer(m):
        return with_augment(m, epochs=round(m.train.epochs * (1 - m.train.finetune_frac)))
    return "CNN augmented until LC3's fine-tuning phase", map_members(cfg, longer, "cnn")


def cnn_higher_lr(cfg):
    return "CNN at twice its peak learning rate", map_members(cfg, lambda m: with_train(m, lr=m.train.lr * 2), "cnn")


def long_warmup(cfg):
    return ("a warm-up of a quarter of the steps (LC3 near a one-cycle triangle)",
            map_members(cfg, lambda m: with_train(m, warmup_frac=0.25)))


def random_erasing(cfg):
    on = _cnn(cfg).train.augment.erase_prob > 0
    return ("CNN without random erasing" if on else "CNN with random erasing (p 0.5) in its augmented epochs",
            map_members(cfg, lambda m: with_augment(m, erase_prob=0.0 if on else 0.5), "cnn"))


def augment_longer(cfg):
    return ("augmentation in every epoch, not only the first five (never frozen)",
            map_members(cfg, lambda m: with_augment(m, epochs=m.train.epochs)))


def no_augmentation(cfg):
    return "no augmentation at all", map_members(cfg, lambda m: with_augment(m, epochs=0))


def depthwise_bn(cfg):
    on = _cnn(cfg).model.dw_bn
    return ("CNN without BN + ReLU between depthwise and pointwise" if on else
            "CNN with BN + ReLU after each depthwise conv too (MobileNet style)",
            map_members(cfg, lambda m: _model(m, dw_bn=not on), "cnn"))


def wider(cfg):
    def widen(m):
        c: CNNConfig = m.model
        return _model(m, stem=c.stem * 3 // 2, stages=tuple(tuple(w * 3 // 2 for w in s) for s in c.stages))
    return "CNN 1.5× wider (every stage)", map_members(cfg, widen, "cnn")


def residual(cfg):
    on = _cnn(cfg).model.residual
    return ("CNN without identity shortcuts" if on else
            "CNN with identity shortcuts around the blocks that keep their width (ResNet style)",
            map_members(cfg, lambda m: _model(m, residual=not on), "cnn"))


def deeper_cnn(cfg):
    def deepen(m):
        stages = m.model.stages
        return _model(m, stages=(*stages[:1], *((*s, s[-1]) for s in stages[1:])), residual=True)
    return ("CNN one block deeper in every stage after the first, with identity shortcuts",
            map_members(cfg, deepen, "cnn"))


def longer(cfg):
    if cfg.budget is not None:  # the planner would scale 1.5× the epochs back into the same budget
        return ("a budget 1.5× as long", cfg.replace(budget=dataclasses.replace(
            cfg.budget, time_limit_s=cfg.budget.time_limit_s * 1.5)))
    return ("every member trained 1.5× the epochs",
            map_members(cfg, lambda m: with_train(m, epochs=-(-m.train.epochs * 3 // 2))))


def ema(cfg):
    on = any(m.train.ema_decay > 0 for m in cfg.members.values())
    return ("without the weights' moving average" if on else
            "every member validated and kept as the moving average of its weights (EMA, decay 0.999)",
            map_members(cfg, lambda m: with_train(m, ema_decay=0.0 if on else 0.999)))


def frozen_bn_scale(cfg):
    return ("BatchNorm scales frozen, its biases at 4× the rate (airbench's), every member",
            map_members(cfg, lambda m: with_train(m, bn_frozen_scale=True, bn_bias_lr=4.0)))


def lookahead(cfg):
    return ("Lookahead around AdamW (k 5, α 0.5), the slow weights validated and kept, every member",
            map_members(cfg, lambda m: with_train(m, lookahead_k=5, lookahead_alpha=0.5, ema_decay=0.0)))


# The MLP anchor of "Members as strong as the best of their family" (Nøkland & Eidnes 2019: 3 × 1024, jitter and
# flips for the whole of a long run, light dropout: 91.63%), one choice at a time, then all together.
def ann_deeper(cfg):
    return "ANN 3 × 1024 hidden", map_members(cfg, lambda m: _model(m, hidden=(1024, 1024, 1024)), "ann")


def ann_light_dropout(cfg):
    return "ANN dropout 0.2", map_members(cfg, lambda m: _model(m, dropout=0.2), "ann")


def ann_augment_every_epoch(cfg):
    return ("ANN augmented in every epoch (never frozen)",
            map_members(cfg, lambda m: with_augment(m, epochs=m.train.epochs), "ann"))


def ann_flip_tta(cfg):
    return "ANN with flip test-time augmentation", map_members(cfg, lambda m: dataclasses.replace(m, tta_flip=True),
                                                            "ann")


def ann_recipe(cfg):
    def anchor(m):
        epochs = 2 * m.train.epochs
        m = _model(m, hidden=(1024, 1024, 1024), dropout=0.2)
        m = with_train(m, epochs=epochs, patience=epochs, augment=dataclasses.replace(m.train.augment, epochs=epochs))
        return dataclasses.replace(m, tta_flip=True)
    return ("ANN as the MLP anchor: 3 × 1024, dropout 0.2, augmented every epoch, 2× the epochs, flip TTA",
            map_members(cfg, anchor, "ann"))


def second_cnn(cfg):
    name = next(n for n, m in cfg.members.items() if m.kind == "cnn")
    return "a second CNN member (own seed): ann + cnn + cnn", cfg.replace(
        members={**cfg.members, f"{name}2": cfg.members[name]})


TRAINING_LEVERS: dict[str, Callable[[RunConfig], tuple[str, RunConfig]]] = {
    "label_smoothing": label_smoothing,
    "strong_label_smoothing": strong_label_smoothing,
    "alternate_flip": alternate_flip,
    "cnn_augment_to_finetune": cnn_augment_to_finetune,
    "cnn_higher_lr": cnn_higher_lr,
    "long_warmup": long_warmup,
    "random_erasing": random_erasing,
    "augment_every_epoch": augment_longer,
    "no_augmentation": no_augmentation,
    "depthwise_bn": depthwise_bn,
    "wider_cnn": wider,
    "cnn_residual": residual,
    "deeper_cnn": deeper_cnn,
    "longer": longer,
    "ema": ema,
    "frozen_bn_scale": frozen_bn_scale,
    "lookahead": lookahead,
    "second_cnn": second_cnn,
    "ann_deeper": ann_deeper,
    "ann_light_dropout": ann_light_dropout,
    "ann_augment_every_epoch": ann_augment_every_epoch,
    "ann_flip_tta": ann_flip_tta,
    "ann_recipe": ann_recipe,
}
INFERENCE_LEVERS = ("tta_flip", "tta_shift", "calibrated_voting", "tuned_weights", "log_loss_weights")
LEVERS = (*TRAINING_LEVERS, *INFERENCE_LEVERS)
