"""Does an input look like the training images? The "I don't know" signal beside every prediction.

Each member's features (what its classifier reads: `model.features`, (N, D)) are measured by their squared
Mahalanobis distance to the nearest class mean, under one covariance shared by the classes, both fit on training
images (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples"). Each member's log
distance is standardised on validation and the members' are summed: the raw score. `ood_score` is the share of
validation images with a lower raw score — 0.5 is a typical image, 0.999 stranger than all but one in a thousand —
and an input is flagged (`ood`) above 1 - `flag_rate`: by construction `flag_rate` (5%) of validation images are.

Why this score (docs/ood.md, `scripts/ood_check.py`): on the shipped model, at 5% of validation flagged, it flagged
every flat and gradient image and square noise, 95% of scikit-learn's digits, 93% of crops of the photos
scikit-learn and scikit-image ship, and 4.2% of the test images the model classified correctly; it misses most
noise that is wider or taller than square, which `preprocess` fits like a bag's or a dress's silhouette. At the
same rate the ensemble's confidence (1 - max probability) flagged 43% of the uniform noise and 58% of the photo
crops, the members' disagreement 62% and 51%: a network is confidently wrong far from its data; its features are
not where garments' are.

Pure numpy: fitting and scoring take features, which the caller computes; nothing here runs a model.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from fashion_ensemble.errors import UserError

FILE = "ood.safetensors"  # in the run folder, beside the members' weights
FORMAT = "fashion-ensemble-ood/1"
FLAG_RATE = 0.05  # share of validation images flagged: the false-alarm rate on images like the training data
FIT_IMAGES = 20_000  # training images the class means and covariance are fit on: a 1024-wide feature's covariance
# needs a few times its width; more costs forward passes for no measurable gain (docs/ood.md)
RIDGE = 1e-6  # added to the covariance's diagonal, relative to its mean variance: keeps it invertible


@dataclass
class MemberStats:
    """One member's feature statistics from training images: class means (K, D) and the shared covariance's inverse
    (D, D); and the mean and std of its log distance on validation, which standardise it."""
    means: np.ndarray
    precision: np.ndarray
    log_mean: float
    log_std: float

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N, D) → (N,) squared Mahalanobis distance to the nearest class mean."""
        f = np.asarray(features, dtype=np.float64)
        g = f @ self.precision
        per_class = (g * f).sum(1)[:, None] - 2 * g @ self.means.T + self.means_norm[None]
        return np.maximum(per_class.min(1), 1e-12)  # ≥ 0 up to rounding; the log needs > 0

    @functools.cached_property
    def means_norm(self) -> np.ndarray:
        """(K,) each class mean's squared norm under the precision: the same for every input, so computed once (for
        a 1,024-wide feature, einsum's K·D² took 3 ms of each one-image call)."""
        return np.einsum("kd,de,ke->k", self.means, self.precision, self.means)

    def standardised(self, features: np.ndarray) -> np.ndarray:
        return (np.log(self.distance(features)) - self.log_mean) / self.log_std


class Detector:
    """`score(features)` → ood scores (N,) in [0, 1]; `flags(scores)` → booleans. `features`: member name → (N, D)."""

    def __init__(self, members: dict[str, MemberStats], reference: np.ndarray, flag_rate: float = FLAG_RATE):
        self.members = members
        self.reference = np.sort(np.asarray(reference, dtype=np.float64))  # validation's raw scores
        self.flag_rate = check_flag_rate(flag_rate)

    def __repr__(self) -> str:
        return (f"Detector(members {', '.join(self.members)}; flags {self.flag_rate:.0%} of "
                f"{len(self.reference):,} validation images)")

    def raw(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return sum(stats.standardised(features[name]) for name, stats in self.members.items())

    def score(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """The share of validation images whose raw score is below each input's: (N,) in [0, 1]."""
        return self.percentile(self.raw(features))

    def percentile(self, raw: np.ndarray) -> np.ndarray:
        """Raw scores (N,) → the share of validation images below each: (N,) in [0, 1]."""
        return np.searchsorted(self.reference, np.asarray(raw, dtype=np.float64), side="left") / len(self.reference)

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """True where an input looks unlike the training images."""
        return np.asarray(scores) > 1 - self.flag_rate

    def save(self, path: str | os.PathLike, fitted_for: dict | None = None) -> None:
        """The statistics as safetensors; `fitted_for` (the run's "run_id", "classes", "input_shape") goes in the
        metadata, so that a file copied into another run is refused when that run loads it."""
        tensors = {"reference": self.reference.astype(np.float32)}
        for name, s in self.members.items():
            tensors |= {f"{name}.means": s.means.astype(np.float32),
                        f"{name}.precision": s.precision.astype(np.float32),
                        f"{name}.log_moments": np.array([s.log_mean, s.log_std], dtype=np.float64)}
        meta = {"format": FORMAT, "flag_rate": repr(self.flag_rate)}
        meta |= {key: json.dumps(value) for key, value in (fitted_for or {}).items() if value is not None}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike, widths: dict[str, int], run: dict | None = None) -> Detector:
        """The detector saved at `path` for members of these feature widths (name → D); `run` ("run_id", "classes",
        "input_shape") is what the run folder says of itself, compared with what the file was fit for. A file that
        does not fit them, or whose numbers are not finite, is refused with the command that rebuilds it."""
        rebuild = "delete it and rebuild it with `fashion-ensemble ood RUN`"
        try:
            with safe_open(str(path), "np") as f:  # one read: the tensors and the metadata
                tensors = {k: f.get_tensor(k) for k in f.keys()}
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable 'I don't know' file ({e}); {rebuild}") from None

        def bad(what: str) -> UserError:
            return UserError(f"{path}: {what}; {rebuild}")

        if meta.get("format") != FORMAT:
            raise bad(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        for key, expected in (run or {}).items():  # older files say nothing of their run: nothing to compare
            if key in meta and expected is not None:
                try:
                    found = json.loads(meta[key])
                except ValueError:
                    raise bad(f"its {key} is not readable ({meta[key][:40]!r})") from None
                if found != expected:
                    raise bad(f"it was fit for another run ({key} {str(found)[:80]}, this run's is "
                              f"{str(expected)[:80]})")
        try:
            flag_rate = float(meta.get("flag_rate", FLAG_RATE))
        except ValueError:
            raise bad(f"flag_rate {meta['flag_rate']!r} is not a number") from None
        if not (math.isfinite(flag_rate) and 0 < flag_rate < 1):
            raise bad(f"flag_rate {flag_rate!r} is not a fraction in (0, 1)")
        reference = _tensor(tensors, "reference", bad)
        if reference.ndim != 1 or len(reference) == 0:
            raise bad(f"its reference scores must be a non-empty list, got shape {reference.shape}")
        members = {}
        for name, width in widths.items():
            if not any(key.startswith(f"{name}.") for key in tensors):
                raise bad(f"no statistics for member {name!r}")
            means = _tensor(tensors, f"{name}.means", bad)
            precision = _tensor(tensors, f"{name}.precision", bad)
            moments = _tensor(tensors, f"{name}.log_moments", bad)
            if means.ndim != 2 or not 1 <= len(means) or means.shape[1] != width:
                raise bad(f"member {name!r}'s class means have shape {means.shape}; its features are {width} wide")
            if precision.shape != (width, width):
                raise bad(f"member {name!r}'s precision has shape {precision.shape}, expected {(width, width)}")
            if moments.shape != (2,) or not moments[1] > 0:
                raise bad(f"member {name!r}'s log_moments must be [mean, std > 0], got {moments.tolist()}")
            members[name] = MemberStats(means.astype(np.float64), precision.astype(np.float64), float(moments[0]),
                                        float(moments[1]))
        return cls(members, reference, flag_rate)


def _tensor(tensors: dict, key: str, bad) -> np.ndarray:
    """A finite floating tensor of the file, or the reason it is not."""
    if key not in tensors:
        raise bad(f"it holds no {key!r}")
    t = tensors[key]
    if not np.issubdtype(t.dtype, np.floating):
        raise bad(f"{key} is {t.dtype}, not floating point")
    if not np.isfinite(t).all():
        raise bad(f"{key} holds NaN or infinite values")
    return t


def check_flag_rate(rate) -> float:
    if not (isinstance(rate, (int, float)) and 0 < rate < 1):
        raise UserError(f"the 'I don't know' flag rate must be a fraction of validation images in (0, 1), got {rate!r}")
    return float(rate)


def fit_member(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray) -> MemberStats:
    """Class means and shared covariance from training features (N, D); log-distance moments from validation's."""
    f = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(train_labels)
    classes = np.unique(y)
    means = np.zeros((int(classes.max()) + 1, f.shape[1]))
    for c in classes:
        means[c] = f[y == c].mean(0)
    means = means[classes]  # classes absent from the sample have no mean
    centred = f - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / len(f)
    cov += RIDGE * max(np.trace(cov) / len(cov), 1e-12) * np.eye(len(cov))
    stats = MemberStats(means, np.linalg.inv(cov), 0.0, 1.0)
    logs = np.log(stats.distance(val_features))
    stats.log_mean, stats.log_std = float(logs.mean()), float(max(logs.std(), 1e-6))
    return stats


def fit(train_features: dict[str, np.ndarray], train_labels: np.ndarray, val_features: dict[str, np.ndarray],
        flag_rate: float = FLAG_RATE) -> Detector:
    """A detector from each member's features on training images (name → (N, D)) and on validation images."""
    members = {name: fit_member(train_features[name], train_labels, val_features[name]) for name in train_features}
    detector = Detector(members, np.zeros(1), flag_rate)
    detector.reference = np.sort(detector.raw(val_features))
    return detector


def fit_sample(labels: np.ndarray, size: int = FIT_IMAGES, seed: int = 0) -> np.ndarray:
    """Indices of at most `size` training images, drawn without replacement, sorted (a fixed draw per split)."""
    n = len(labels)
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def rates(scores: np.ndarray, correct: np.ndarray, flag_rate: float) -> dict:
    """How the signal splits a labelled split: the share flagged, of the correct and of the wrong predictions, and
    the accuracy of the predictions kept and of those flagged."""
    flagged = np.asarray(scores) > 1 - flag_rate
    correct = np.asarray(correct, dtype=bool)

    def share(mask):
        return float(mask.mean()) if mask.size else None

    return {"flag_rate": flag_rate, "flagged": share(flagged), "correct_flagged": share(flagged[correct]),
            "wrong_flagged": share(flagged[~correct]), "accuracy_kept": share(correct[~flagged]),
            "accuracy_flagged": share(correct[flagged])}
