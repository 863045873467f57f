"""The schema of a run's configuration: typed, frozen dataclasses, each field with a one-line reason, checked when
built. A `RunConfig` round-trips through JSON (`to_dict` / `from_dict`), which is how a run folder's `config.json`
rebuilds its models with no other input. A member's own hyper-parameters belong to its kind (members/).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field

from fashion_ensemble import members
from fashion_ensemble.errors import UserError, check

PROTOCOLS = ("paper", "standard")
PIPELINES = ("preprocess", "pad")  # how an image file becomes a model input (preprocess.py): as a photo, or padded
PRECISIONS = ("auto", "fp32", "bf16")  # training's autocast; "auto": bf16 where the hardware has it (inference.py)
FASHION_MNIST = "fashion-mnist"  # the default data source: Fashion-MNIST's official IDX files
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a member's or profile's name: it becomes a file name
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 256  # 8: scikit-learn's digits; 256: a DS-CNN's step costs 84× a 28×28 one
MAX_SHIFT = 13  # pixels, for augmentation's and TTA's shifts: half a 28-pixel image less one keeps some of it in view


@dataclass(frozen=True)
class DataConfig:
    source: str = FASHION_MNIST  # "fashion-mnist", or a folder: another IDX data set, or images in class folders
    pipeline: str = "preprocess"  # image folders: "preprocess" as for users' photos, or "pad" (resize and centre)
    skip_bad_images: bool = False  # image folders: leave out files that cannot be decoded (else the run is refused)
    image_size: int = 28  # side of the square model input, in pixels: the paper's (and Fashion-MNIST's) 28
    channels: int = 1  # 1: greyscale (the paper's); 3: RGB, for image folders whose colour tells the classes apart
    protocol: str = "standard"  # "paper": 70k pooled, 80/10/10; "standard": official 60k/10k, val 10% of train
    val_fraction: float = 0.1  # standard protocol: share of the official train set held out for validation
    split_seed: int = 0  # fixed, independent of the training seed, so every seed sees the same split
    train_subset: int | None = None  # only N training images (smoke tests), as data.make_split draws them; None: all
    verify_checksums: bool = True  # refuse files whose content differs from the official release

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one model input."""
        return (self.channels, self.image_size, self.image_size)

    def __post_init__(self):
        check(bool(self.source.strip()), "data.source", self.source, f"{FASHION_MNIST!r} or a folder's path")
        check(self.pipeline in PIPELINES, "data.pipeline", self.pipeline, f"one of {', '.join(PIPELINES)}")
        check(MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE, "data.image_size", self.image_size,
               f"{MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels")
        check(self.channels in (1, 3), "data.channels", self.channels, "1 (greyscale) or 3 (RGB)")
        check(self.protocol in PROTOCOLS, "data.protocol", self.protocol, f"one of {', '.join(PROTOCOLS)}")
        check(0 < self.val_fraction < 1, "data.val_fraction", self.val_fraction, "a fraction in (0, 1)")
        check(self.train_subset is None or self.train_subset >= 10, "data.train_subset", self.train_subset,
               "None or at least 10")


@dataclass(frozen=True)
class AugmentConfig:
    epochs: int = 5  # the paper: augmentation in the first five epochs only, then "frozen"
    flip: bool = True  # garments are left/right symmetric enough that a mirror is a new valid sample
    flip_alternate: bool = False  # airbench's flip: each image mirrored in every other augmented epoch (a seeded
    # random half in the first) instead of by a coin each epoch, so that two epochs see both of its sides
    max_shift: int = 2  # pixels; Fashion-MNIST is centred, so small translations are the realistic variation
    erase_prob: float = 0.0  # random erasing: chance per image of blanking one rectangle (regularises the CNN)
    erase_max_frac: float = 0.25  # the erased rectangle covers at most this share of the image
    elastic_alpha: float = 0.0  # elastic distortion (Simard et al. 2003): 0 off, else the scale in pixels of a random
    # displacement field; it lifts MLPs on digits, not ours on Fashion-MNIST (docs/results.md)
    elastic_sigma: float = 4.0  # pixels; Gaussian smoothing of that field: larger is smoother (fewer, broader bends)

    def __post_init__(self):
        check(self.epochs >= 0, "augment.epochs", self.epochs, "0 or more")
        check(0 <= self.max_shift <= MAX_SHIFT, "augment.max_shift", self.max_shift, f"0..{MAX_SHIFT} pixels")
        check(0 <= self.erase_prob <= 1, "augment.erase_prob", self.erase_prob, "a probability in [0, 1]")
        check(0 < self.erase_max_frac <= 1, "augment.erase_max_frac", self.erase_max_frac, "a fraction in (0, 1]")
        check(0 <= self.elastic_alpha <= 100, "augment.elastic_alpha", self.elastic_alpha, "0 (off) to 100 pixels")
        check(0.5 <= self.elastic_sigma <= 14, "augment.elastic_sigma", self.elastic_sigma, "0.5 to 14 pixels")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20  # upper bound; early stopping may end sooner
    batch_size: int = 128  # measured fastest per image for the DS-CNN on a 2-core CPU (cache-resident activations)
    lr: float = 2e-3  # AdamW peak learning rate, reached at the end of warm-up
    weight_decay: float = 5e-4  # AdamW's decoupled weight decay: the paper's L2 regularisation
    warmup_frac: float = 0.05  # LC3 phase 1: linear warm-up over this share of all steps
    finetune_frac: float = 0.15  # LC3 phase 3: the last share of steps at a constant low rate
    finetune_lr: float = 0.02  # LC3 phase 3 rate, as a fraction of the peak; cosine decays down to it
    patience: int = 5  # early stopping: epochs without a better validation loss before stopping
    restore_best: bool = True  # end with the best validation-loss weights; False: the last (a small data set's few
    # dozen validation images pick a noisy best epoch, early and at a high rate: docs/budgets.md#small-data)
    label_smoothing: float = 0.0  # mass moved from the one-hot target to the other classes
    class_weights: str = "none"  # "balanced": each class's loss weighted by N / (K · its images), as scikit-learn's
    # class_weight="balanced", so that a rare class counts as much as a common one; "none": every image alike
    ema_decay: float = 0.0  # 0: off; else validation scores, and training keeps, an exponential moving average of
    # the weights (and BatchNorm statistics) updated every step with this decay
    lookahead_k: int = 0  # 0: off; else Lookahead (Zhang et al. 2019) around AdamW: every k steps the slow weights
    # move lookahead_alpha of the way to the fast ones and the fast restart from them; validation scores, and
    # training keeps, the slow weights
    lookahead_alpha: float = 0.5  # the slow weights' step towards the fast ones (the paper's α)
    bn_frozen_scale: bool = False  # BatchNorm's scales not trained (kept at their start, 1 from random weights), as
    # airbench does; only the BN biases then shift each channel
    bn_bias_lr: float = 1.0  # BatchNorm biases' rate as a multiple of `lr` (airbench trains them faster), their
    # decay divided by it so that the decay per step stays the same
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    precision: str = "auto"  # "auto": bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX), where
    # it is faster (docs/performance.md); fp32 elsewhere (emulated bf16 is slower); or "fp32" / "bf16" forced

    def __post_init__(self):
        check(self.epochs >= 1, "train.epochs", self.epochs, "1 or more")
        check(self.batch_size >= 1, "train.batch_size", self.batch_size, "1 or more")
        check(self.lr > 0, "train.lr", self.lr, "a positive rate")
        check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "0 or more")
        check(0 <= self.warmup_frac < 1 and 0 <= self.finetune_frac < 1
               and self.warmup_frac + self.finetune_frac < 1, "train.warmup_frac + finetune_frac",
               (self.warmup_frac, self.finetune_frac), "fractions that sum to less than 1")
        check(0 < self.finetune_lr <= 1, "train.finetune_lr", self.finetune_lr, "a fraction of the peak in (0, 1]")
        check(self.patience >= 1, "train.patience", self.patience, "1 or more")
        check(0 <= self.label_smoothing < 1, "train.label_smoothing", self.label_smoothing, "a fraction in [0, 1)")
        check(self.class_weights in ("none", "balanced"), "train.class_weights", self.class_weights,
              '"none" or "balanced"')
        check(0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay, "0 (off) or a decay in (0, 1)")
        check(self.lookahead_k >= 0, "train.lookahead_k", self.lookahead_k, "0 (off) or the steps between syncs")
        check(0 < self.lookahead_alpha <= 1, "train.lookahead_alpha", self.lookahead_alpha, "a fraction in (0, 1]")
        check(not (self.lookahead_k and self.ema_decay), "train.lookahead_k with train.ema_decay",
              (self.lookahead_k, self.ema_decay), "one weight average at a time (set the other to 0)")
        check(self.bn_bias_lr > 0, "train.bn_bias_lr", self.bn_bias_lr, "a positive multiple of train.lr")
        check(self.precision in PRECISIONS, "train.precision", self.precision, f"one of {', '.join(PRECISIONS)}")


@dataclass(frozen=True)
class MemberConfig:
    kind: str  # a registered member kind (members.KINDS): "ann" or "cnn"
    model: typing.Any  # that kind's config (ANNConfig, CNNConfig), decoded by the kind's registered class
    train: TrainConfig
    tta_flip: bool = False  # inference: average the probabilities of each image and its mirror (helps the DS-CNN;
    # the ANN, not mirror-invariant, loses from it)
    tta_shift: int = 0  # inference: also average over the image moved this many pixels up, down, left and right
    # (0: off): 5× the inference, for members augmented throughout (docs/profiles.md#best)

    def __post_init__(self):
        check(isinstance(self.model, members.kind(self.kind).config), f"{self.kind} member's model", self.model,
               f"a {members.kind(self.kind).config.__name__}")
        check(0 <= self.tta_shift <= MAX_SHIFT, "tta_shift", self.tta_shift, f"0 (off) to {MAX_SHIFT} pixels")


# Voting weights: the plain average; a grid search of validation accuracy; the same grid on validation log-loss.
WEIGHTINGS = ("equal", "tuned", "log_loss")
# What computes a loaded model's predictions: ONNX Runtime where installed and on the CPU, else PyTorch; or either.
ENGINES = ("auto", "onnx", "torch")


@dataclass(frozen=True)
class EnsembleConfig:
    weights: str = "tuned"  # "equal": the paper's plain average; "tuned": grid-searched on validation accuracy;
    # "log_loss": grid-searched on validation log-loss (`default` and `best`: steadier, docs/results.md)
    calibrate: bool = False  # temperature-scale each member on validation before voting, so that neither member's
    # over- or under-confidence decides the average (the label-smoothed CNN is under-confident: T ≈ 0.6)

    def __post_init__(self):  # here, not after the training that `fit` comes after
        check(self.weights in WEIGHTINGS, "ensemble.weights", self.weights, f"one of {', '.join(WEIGHTINGS)}")


@dataclass(frozen=True)
class MemberPlan:
    """What the planner measured for one member on this machine and the schedule it chose from it."""

    epochs: int  # the member's train.epochs as planned
    augment_epochs: int  # its train.augment.epochs: the recipe's augmented share of them
    patience: int  # its train.patience, in the same proportion to the epochs as the recipe's
    step_s: float  # measured: one training step of batch_size images, augmentation included, in `precision`
    eval_s: float  # measured: one pass of the validation images (what every epoch ends with)
    precision: str  # what the member trains in here ("fp32" or "bf16")
    images_per_s: float  # training images a second at step_s
    finish_by_s: float | None = None  # seconds after the run's start by which its training must end, so that the
    # members after it and the scoring still fit: where the machine turns slower than measured, it stops there
    stopped_at: int | None = None  # the epoch that deadline stopped it after, when it did; a replay stops there too
    recipe: str = "profile"  # "profile": the profile's recipe scaled; "small data": its small-data overlay


@dataclass(frozen=True)
class BudgetConfig:
    time_limit_s: float  # the whole study (data, both members, vote, "I don't know", scoring, report) ends within it
    max_epochs: int = 1000  # an upper bound per member: tiny data sets would otherwise plan tens of thousands
    # (50 images a class still gained from 400 to 1,000: docs/budgets.md#small-data)
    reserve_frac: float = 0.05  # held back for what the measurements cannot see (the machine's noise, the report)
    plan: dict[str, MemberPlan] = field(default_factory=dict)  # filled by the planner (study/planner.py) before
    # training; a config whose plan is filled trains as planned without measuring again (a replay is exact)

    def __post_init__(self):
        check(math.isfinite(self.time_limit_s) and self.time_limit_s > 0, "budget.time_limit_s", self.time_limit_s,
              "a positive number of seconds (or --time-limit 10m, 2h, 90s)")
        check(1 <= self.max_epochs <= 100_000, "budget.max_epochs", self.max_epochs, "1..100000")
        check(0 <= self.reserve_frac < 0.5, "budget.reserve_frac", self.reserve_frac, "a fraction in [0, 0.5)")


@dataclass(frozen=True)
class InitConfig:
    source: str  # the run folder whose members' weights this run's members start from ("pretrained": the shipped one)
    run_id: str  # that run's weights digest (its ensemble.json "run_id") when this run began: a replay or resume
    # refuses other weights under the same path


@dataclass(frozen=True)
class RunConfig:
    profile: str
    seed: int = 0  # training seed: weights, shuffling, augmentation
    data: DataConfig = field(default_factory=DataConfig)
    members: dict[str, MemberConfig] = field(default_factory=dict)  # name → member; the paper has "ann" and "cnn"
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    budget: BudgetConfig | None = None  # None: each member's own epochs; else a time limit the schedule is planned to
    init: InitConfig | None = None  # None: random initial weights; else each member starts from a trained run's

    def __post_init__(self):
        check(bool(NAME.fullmatch(self.profile)), "profile", self.profile,
               "a name of letters, digits, '_', '-' or '.' (it names the run folder)")
        for name in self.members:
            check(bool(NAME.fullmatch(name)), "members", name,
                   "named with letters, digits, '_', '-' or '.' (the name is its weights file's)")
        check(self.seed >= 0, "seed", self.seed, "0 or more")
        shape = self.data.input_shape
        for name, m in self.members.items():
            members.check_member(name, m.kind, m.model, shape)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return _build(cls, d)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


def _build(tp, value):
    """Rebuild a (nested) dataclass from JSON-like data, checking names and turning lists into tuples."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config: expected an object for {tp.__name__}, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = set(value) - names
        if unknown:
            raise UserError(f"config: unknown field(s) {sorted(unknown)} for {tp.__name__}; known: {sorted(names)}")
        kwargs = {k: _build(hints[k], v) for k, v in value.items()}  # the given fields' own mistakes first
        if tp is MemberConfig:
            model_cls = members.kind(value.get("kind")).config
        missing = sorted(f.name for f in dataclasses.fields(tp) if f.name not in value
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise UserError(f"config: missing field(s) {missing} for {tp.__name__}")
        if tp is MemberConfig:
            kwargs["model"] = _build(model_cls, value["model"])
        return tp(**kwargs)
    if tp is typing.Any:  # a member's model: decoded by MemberConfig above, which knows the kind
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _build(next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config: expected a list, got {value!r}")
        return tuple(_build(typing.get_args(tp)[0], v) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config: expected an object, got {value!r}")
        _, vt = typing.get_args(tp)
        return {k: _build(vt, v) for k, v in value.items()}
    if tp in (int, float) and isinstance(value, bool):
        raise UserError(f"config: expected {tp.__name__}, got {value!r}")
    if tp is float and isinstance(value, int):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise UserError(f"config: expected {tp.__name__}, got {value!r}")
    return value
