"""The soft-voting ensemble: members' class probabilities averaged with weights, both fit on validation by `fit`.

`predict_proba(images)` takes the members' geometry — (N, 28, 28) greyscale for Fashion-MNIST, (N, S, S, 3) for an
RGB data set — uint8 in Fashion-MNIST's convention (garment bright on black) or float in [0, 1], and returns a float64
numpy array (N, classes) whose rows sum to 1. Nothing here computes metrics or prints.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import torch

from fashion_ensemble.config import ENGINES, GREY, WEIGHTINGS, MemberConfig
from fashion_ensemble.config.classes import CLASSES
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.inference import (
    array_shape,
    check_images,
    model_features,
    model_inputs,
    model_proba,
    weights_version,
)
from fashion_ensemble.model.probabilities import fit_temperature, temperature_scale, tta_views


class Member:
    """One trained model with `predict_proba`; `kind` is "ann" or "cnn". With `tta_flip`, the probabilities are the
    mean of the image's and its mirror's; with `tta_shift` k > 0, also of the image moved k pixels each way
    (probabilities.member_proba). A `temperature` other than 1 rescales those probabilities as softmax(log p / T)
    (fit on validation by `SoftVotingEnsemble.fit` when the profile calibrates its members)."""

    def __init__(self, kind: str, model: torch.nn.Module, device: torch.device | str = "cpu", tta_flip: bool = False,
                 temperature: float = 1.0, tta_shift: int = 0):
        self.kind = kind
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tta_flip = tta_flip
        self.tta_shift = tta_shift
        self.temperature = check_temperature(temperature)

    @classmethod
    def from_config(cls, cfg: MemberConfig, model: torch.nn.Module, device: torch.device | str = "cpu",
                    temperature: float = 1.0) -> Member:
        """The member a `MemberConfig` describes, around its (trained or fresh) model: kind and TTA from the config."""
        return cls(cfg.kind, model, device, tta_flip=cfg.tta_flip, temperature=temperature, tta_shift=cfg.tta_shift)

    def predict_proba(self, images, *, calibrated: bool = True) -> np.ndarray:
        """(N, classes) probabilities; `calibrated=False`: without the temperature (the model's own, with its TTA).
        `images`: a model-input batch (N, S, S) or (N, S, S, 3), uint8 or float in [0, 1] (see `check_images`)."""
        return self._proba(check_images(images, self.input_shape), calibrated)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input: (1, 28, 28) for Fashion-MNIST."""
        return getattr(self.model, "input_shape", GREY)

    @property
    def views(self) -> int:
        """Forward passes an image costs: 1, 2 (mirror), 5 (shifts) or 10 (both)."""
        return tta_views(self.tta_flip, self.tta_shift)

    def _proba(self, x: torch.Tensor, calibrated: bool = True, keep_features: list | None = None) -> np.ndarray:
        """x: checked float (N, C, S, S) on the CPU → probabilities (N, classes), float64. `keep_features`: a list
        that receives the images' own features (N, D) float64 from the same pass (what `features` gives)."""
        return model_proba(self.model, x, self.device, tta_flip=self.tta_flip, tta_shift=self.tta_shift,
                           temperature=self.temperature if calibrated else 1.0, keep_features=keep_features)

    def features(self, images) -> np.ndarray:
        """What the model's classifier reads (N, D), float64, without TTA: the "I don't know" signal measures it."""
        return self._features(check_images(images, self.input_shape))

    def _features(self, x: torch.Tensor) -> np.ndarray:
        return model_features(self.model, x, self.device)

    def calibrate(self, raw_proba: np.ndarray) -> np.ndarray:
        """Probabilities without the temperature (`predict_proba(..., calibrated=False)`) → with it."""
        return raw_proba if self.temperature == 1.0 else temperature_scale(raw_proba, self.temperature)


TEMPERATURES = (0.01, 100.0)  # sane range: fitting searches [0.05, 20]; beyond, a float32 softmax under- or overflows


def check_temperature(temperature) -> float:
    lo, hi = TEMPERATURES
    if not (np.isfinite(temperature) and lo <= temperature <= hi):
        raise UserError(f"a member's temperature must be a number in [{lo:g}, {hi:g}], got {temperature!r}")
    return float(temperature)


def check_weights(weights, names) -> np.ndarray:
    """One non-negative finite weight per member, not all zero; returned normalised to sum 1."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    if len(w) != len(names):
        raise UserError(f"expected one voting weight per member ({len(names)}: {', '.join(names)}), got {list(w)}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise UserError(f"voting weights must be finite and non-negative, got {list(w)}")
    if w.sum() == 0:
        raise UserError(f"voting weights must not all be zero, got {list(w)}")
    return w / w.sum()


def soft_vote(probas: list[np.ndarray], weights) -> np.ndarray:
    """Weighted average of members' probabilities: (M × (N, 10)) → (N, 10)."""
    w = check_weights(weights, [str(i) for i in range(len(probas))])
    return np.tensordot(w, np.stack(probas), axes=1)


class SoftVotingEnsemble:
    """Members' class probabilities averaged with `weights` (normalised). `.members` maps name → Member; `.classes`
    names the probabilities' columns (Fashion-MNIST's ten unless the data set had others).

    `fit` sets what the ensemble learns on validation: each member's temperature (when calibrating) and the voting
    weights; built from a run folder (`runs.load`), both come from its ensemble.json.

    `engine` says what computes the public predictions (`predict_proba`, `predict_with_ood`, `ood_score`, ...):
    "torch", the members themselves (the default here: training and scoring use it); "onnx", the same ensemble as
    one ONNX Runtime graph (engine.py), built on the first prediction and again whenever the members, temperatures,
    weights or "I don't know" signal change, with the same answers to float32 rounding (~1e-6) and 6× faster on one
    image (19× with the "I don't know" score; docs/performance.md#one-image); "auto" (what `fe.load` gives), "onnx"
    where ONNX Runtime is installed and every member is on the CPU, else "torch"."""

    def __init__(self, members: dict[str, Member], weights=None, classes=CLASSES, pipeline: str = "preprocess",
                 engine: str = "torch"):
        if not members:
            raise UserError("an ensemble needs at least one member")
        self.members = dict(members)
        shapes = {m.input_shape for m in self.members.values()}
        if len(shapes) > 1:
            raise UserError(f"the members take different input shapes {sorted(shapes)}; an ensemble needs one")
        self.input_shape = shapes.pop()
        weights = [1.0] * len(self.members) if weights is None else weights
        self.weights = dict(zip(self.members, check_weights(weights, list(self.members)).tolist()))
        self.classes = list(classes)
        self.pipeline = pipeline  # how `preprocess` turns a file into an input: "preprocess" (photos) or "pad"
        self.ood = None  # the "I don't know" signal (ood.Detector), fit on training and validation features by the
        # study; None for a run folder made before it existed (`fashion-ensemble ood RUN` adds it)
        self.engine = engine
        self._fast: tuple | None = None  # (the state it was built for, the OnnxEnsemble): see `_onnx`
        self._fast_lock = threading.Lock()  # one build when several threads predict at once

    @property
    def engine(self) -> str:
        return self._engine

    @engine.setter
    def engine(self, engine: str) -> None:
        if engine not in ENGINES:
            raise UserError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
        self._engine = engine

    def __getstate__(self) -> dict:  # copies and pickles leave the ONNX session and the lock behind
        return {k: v for k, v in self.__dict__.items() if k not in ("_fast", "_fast_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _fast=None, _fast_lock=threading.Lock())

    def fit(self, raw_probas: dict[str, np.ndarray], y_val: np.ndarray, *, calibrate: bool = False,
            weighting: str = "tuned") -> SoftVotingEnsemble:
        """Fit on validation, from each member's probabilities without a temperature (name → (N, 10)): with
        `calibrate`, each member's temperature by log-likelihood; then the voting weights, "equal", "tuned" (grid
        search of validation accuracy over the calibrated probabilities) or "log_loss" (the same grid, minimising
        validation log-loss). Returns self."""
        if weighting not in WEIGHTINGS:
            raise UserError(f"unknown weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")
        for name, member in self.members.items():
            member.temperature = fit_temperature(y_val, raw_probas[name]) if calibrate else 1.0
        if weighting != "equal":
            weights = tune_weights([m.calibrate(raw_probas[n]) for n, m in self.members.items()], y_val,
                                   criterion="accuracy" if weighting == "tuned" else "log_loss")
        else:
            weights = np.full(len(self.members), 1.0 / len(self.members))
        self.weights = dict(zip(self.members, weights.tolist()))
        return self

    def __repr__(self) -> str:
        c, s, _ = self.input_shape
        members = " + ".join(f"{name} ({m.kind}, {sum(p.numel() for p in m.model.parameters()):,} parameters, "
                             f"weight {self.weights[name]:.2f})" for name, m in self.members.items())
        shown = ", ".join(self.classes[:5]) + (", ..." if len(self.classes) > 5 else "")
        return (f"SoftVotingEnsemble({members}; {len(self.classes)} classes: {shown}; input {s}×{s} "
                f"{'greyscale' if c == 1 else 'RGB'}; engine {self.engine})")

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities (N, classes), float64, rows summing to 1; columns in the order of `.classes`.

        `images`: a batch of model inputs — uint8 (N, 28, 28) in Fashion-MNIST's convention (garment bright on black)
        or float in [0, 1]; the run's own (N, S, S) or (N, S, S, 3) for another geometry — or any image: a path,
        bytes, a PIL image or a numpy image of any size, or a list of them, which go through `preprocess` first.
        Computed by the ensemble's `engine`."""
        return self.predict_proba_members(images)[0]

    def predict_labels(self, images) -> list[str]:
        """The most likely class's name for each image (`predict` gives its index)."""
        return [self.classes[i] for i in self.predict(images)]

    def predict_proba_members(self, images) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(the ensemble's probabilities (N, classes), {member name: its probabilities (N, classes)})."""
        return self._answer(images, with_ood=False)[:2]

    def predict_with_ood(self, images) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        """`predict_proba_members`'s pair and the ood scores (N,) in [0, 1] (see `ood_score`; None when this
        ensemble has no "I don't know" signal), from one check of the images."""
        return self._answer(images, with_ood=self.ood is not None)

    def ood_score(self, images) -> np.ndarray:
        """How unlike the training images each input is, (N,) in [0, 1]: the share of validation images that look
        more typical (0.5: typical; 0.999: stranger than all but one in a thousand). See ood.py."""
        self._require_ood()
        return self._answer(images, with_ood=True)[2]

    def is_ood(self, images) -> np.ndarray:
        """True where an input looks unlike anything the model was trained on (`ood_score` above 1 - flag rate)."""
        return self._require_ood().flags(self.ood_score(images))

    def _answer(self, images, with_ood: bool) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        """(probabilities, each member's, ood scores or None) from the engine that answers now."""
        x = model_inputs(images, self.input_shape, self.pipeline)
        fast = self._onnx()
        if fast is not None:
            proba, member_probas, scores = fast.run(x)
            return proba, member_probas, scores if with_ood else None
        if not with_ood:
            return *self._predict(x), None
        kept = {name: [] for name in self.members}  # each member's features, from its probabilities' pass
        member_probas = {name: m._proba(x, keep_features=kept[name]) for name, m in self.members.items()}
        features = {name: kept[name][0] if kept[name] else m._features(x) for name, m in self.members.items()}
        return self._vote_checked(member_probas), member_probas, self.ood.score(features)

    def _onnx(self):
        """The OnnxEnsemble that answers for this ensemble as it is now, or None where PyTorch answers (`engine`)."""
        if self.engine == "torch":
            return None
        off_cpu = sorted({m.device.type for m in self.members.values()} - {"cpu"})
        from fashion_ensemble.model.engine import OnnxEnsemble, onnxruntime_available

        if off_cpu or not onnxruntime_available():
            if self.engine == "auto":
                return None
            raise UserError("engine 'onnx' runs on the CPU; these members are on " + ", ".join(off_cpu)
                            if off_cpu else "engine 'onnx' needs ONNX Runtime: pip install onnxruntime (or use "
                            "engine 'torch')")
        state = self._state()
        if any(member[2] is None for member in state[0]):  # weights whose changes cannot be seen: PyTorch answers
            return None
        with self._fast_lock:
            if self._fast is None or self._fast[0] != state:
                self._fast = (state, OnnxEnsemble(self))
            return self._fast[1]

    @property
    def engine_in_use(self) -> str:
        """"onnx" or "torch": what answers the next prediction (`engine` "auto" resolved here)."""
        return "onnx" if self._onnx() is not None else "torch"

    def warm_up(self) -> SoftVotingEnsemble:
        """Build the engine and run it once on a blank image now, so that the first real prediction is as fast as
        the rest (a service calls it before it listens). Returns self."""
        blank = np.zeros((1, *array_shape(self.input_shape)), np.uint8)
        self.predict_with_ood(blank)
        self.predict_with_ood(np.concatenate([blank] * 4))  # ONNX Runtime has a session for 1-2 images and one for more
        return self

    def _state(self) -> tuple:
        """What the ONNX graph was built from: every member's module, its weights' in-place changes (tensor version
        counters: a training step or `load_state_dict` moves them), TTA and temperature; the vote; the signal."""
        members = tuple((name, id(m.model), weights_version(m.model), m.tta_flip, m.tta_shift, m.temperature)
                        for name, m in self.members.items())
        return members, tuple(self.weights.items()), tuple(self.classes), self.pipeline, id(self.ood)

    def _predict(self, x: torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The PyTorch members on checked inputs: (probabilities, each member's)."""
        member_probas = {name: m._proba(x) for name, m in self.members.items()}
        return self._vote_checked(member_probas), member_probas

    def _vote_checked(self, member_probas: dict[str, np.ndarray]) -> np.ndarray:
        proba = self.vote(member_probas)
        if not np.isfinite(proba).all():  # finite weights give finite probabilities: never emit NaN
            raise UserError("the model gave non-finite probabilities; its weights are damaged (train it again)")
        return proba

    def _require_ood(self):
        if self.ood is None:
            raise UserError("this model has no 'I don't know' signal (its run folder was made before it existed): "
                            "add it with `fashion-ensemble ood RUN_DIR`")
        return self.ood

    def vote(self, member_probas: dict[str, np.ndarray]) -> np.ndarray:
        """The ensemble's probabilities from its members' (name → (N, 10)), as `predict_proba` combines them."""
        return soft_vote([member_probas[name] for name in self.members], list(self.weights.values()))

    def predict(self, images) -> np.ndarray:
        return self.predict_proba(images).argmax(axis=1)


def tune_weights(val_probas: list[np.ndarray], y_val: np.ndarray, step: float = 0.05,
                 criterion: str = "accuracy") -> np.ndarray:
    """Voting weights on a grid over the simplex (resolution `step`) maximising validation accuracy (`criterion`
    "accuracy"; ties go to the lower validation log-loss) or minimising validation log-loss ("log_loss"; ties go to
    the higher accuracy); then to the more equal weighting. Returns weights summing to 1. Log-loss weighs every
    image's probabilities, not only the few whose argmax flips, so its choice is less noisy: over ten runs it gave
    the weaker member less weight and beat the stronger one more often (docs/results.md)."""
    if criterion not in ("accuracy", "log_loss"):
        raise UserError(f"unknown weight-tuning criterion {criterion!r}; choose 'accuracy' or 'log_loss'")
    m = len(val_probas)
    ticks = round(1 / step)
    best_key, best_w = None, None
    stacked = np.stack(val_probas)  # (M, N, 10)
    for combo in itertools.product(range(ticks + 1), repeat=m - 1):
        if sum(combo) > ticks:
            continue
        w = np.array([*combo, ticks - sum(combo)], dtype=np.float64) / ticks
        p = np.tensordot(w, stacked, axes=1)
        acc = float((p.argmax(1) == y_val).mean())
        nll = float(-np.log(np.clip(p[np.arange(len(y_val)), y_val], 1e-12, None)).mean())
        spread = float(np.abs(w - 1 / m).sum())
        key = (-acc, round(nll, 6), spread) if criterion == "accuracy" else (round(nll, 6), -acc, spread)
        if best_key is None or key < best_key:
            best_key, best_w = key, w
    return best_w
