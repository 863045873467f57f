"""Scoring a fitted ensemble: its members' probabilities on a split → the scores of metrics.json.

One function, `score`, for the study, `evaluate` and `ablate`. It runs no model: `predict` runs each member once per
split, and `score` combines those probabilities (temperatures, voting, alternatives) with the pure metric functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fashion_ensemble.model import ood
from fashion_ensemble.model.ensemble import SoftVotingEnsemble, soft_vote, tune_weights
from fashion_ensemble.study.metrics import calibration, classification_metrics, mcnemar_exact, top_errors

SUMMARY = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "log_loss")  # of an alternative weighting


@dataclass
class Predictions:
    """Each member's probabilities on one split without its temperature (name → (N, 10)), the true labels, and the
    ensemble's ood scores (N,) when it has the "I don't know" signal."""
    raw: dict[str, np.ndarray]
    labels: np.ndarray
    ood: np.ndarray | None = None


def predict(ensemble: SoftVotingEnsemble, images: np.ndarray, labels: np.ndarray, ood_scores: bool = True
            ) -> Predictions:
    """Run every member once on `images`: its probabilities with its flip TTA, before its temperature; and, when the
    ensemble has it and `ood_scores` asks, the "I don't know" signal's scores."""
    scores = ensemble.ood_score(images) if ood_scores and ensemble.ood is not None else None
    return Predictions({n: m.predict_proba(images, calibrated=False) for n, m in ensemble.members.items()},
                       np.asarray(labels), scores)


def score(ensemble: SoftVotingEnsemble, test: Predictions, val: Predictions | None = None,
          origins: np.ndarray | None = None) -> dict:
    """The scores of a fitted ensemble, from its members' probabilities on test (and validation), `origins` naming
    each test image's file:

    - "models": each member's (with its temperature) and the ensemble's classification metrics on test;
    - "significance": McNemar's exact test of the ensemble against each member on test;
    with `val`, also
    - "val_accuracy" of each and of the ensemble;
    - "top_errors": the ensemble's 16 most confident mistakes on test, and "test_errors": all of them, each with its
      file (`origins`);
    - "calibration": a temperature fit on validation and scored on test, each member from its raw outputs (so that
      "after" is what it votes with when it is calibrated), the ensemble as it votes;
    - "alternatives": equal and tuned weights side by side, and, for calibrated members, both without temperatures.
    """
    names = list(ensemble.members)
    y_te = test.labels
    test_p = _calibrated(ensemble, test)
    ens_p = ensemble.vote(test_p)
    classes = ensemble.classes
    models = {n: classification_metrics(y_te, test_p[n], classes) for n in names}
    models["ensemble"] = classification_metrics(y_te, ens_p, classes)
    significance = {  # ensemble (a) against each member (b), on the test images
        f"ensemble_vs_{n}": mcnemar_exact(y_te, ens_p.argmax(1), test_p[n].argmax(1)) for n in names
    }
    flags = {} if test.ood is None else {"ood": ood.rates(test.ood, ens_p.argmax(1) == y_te, ensemble.ood.flag_rate)}
    if val is None:
        return {"models": models, "significance": significance, **flags}

    y_va = val.labels
    val_p = _calibrated(ensemble, val)
    val_all = {**val_p, "ensemble": ensemble.vote(val_p)}
    return {
        "val_accuracy": {n: float((p.argmax(1) == y_va).mean()) for n, p in val_all.items()},
        "models": models,
        "significance": significance,
        "top_errors": top_errors(y_te, ens_p, classes, origins=origins),  # its most confident mistakes on test
        "test_errors": top_errors(y_te, ens_p, classes, k=None, origins=origins),  # every one, down to the file
        "calibration": {**{n: calibration(y_va, val.raw[n], y_te, test.raw[n]) for n in names},
                        "ensemble": calibration(y_va, val_all["ensemble"], y_te, ens_p)},
        "alternatives": {**alternatives(val_p, y_va, test_p, y_te, classes),  # as the members vote
                         **(alternatives(val.raw, y_va, test.raw, y_te, classes, "uncalibrated_")  # no temperatures
                            if any(m.temperature != 1.0 for m in ensemble.members.values()) else {})},
        **flags,  # how the "I don't know" signal splits the test images' right and wrong predictions
    }


def alternatives(val_p: dict, y_val: np.ndarray, test_p: dict, y_test: np.ndarray, classes, prefix: str = "") -> dict:
    """Test scores of equal voting weights and of weights tuned on validation accuracy and on validation log-loss,
    over members' probabilities (name → (N, 10)), whichever the ensemble uses."""
    names = list(val_p)
    equal = np.full(len(names), 1.0 / len(names))
    tuned = tune_weights([val_p[n] for n in names], y_val)
    by_log_loss = tune_weights([val_p[n] for n in names], y_val, criterion="log_loss")
    test_probas = [test_p[n] for n in names]
    return {
        f"{prefix}ensemble_equal_weights": _summary(y_test, soft_vote(test_probas, equal), classes),
        f"{prefix}ensemble_tuned_weights": _summary(y_test, soft_vote(test_probas, tuned), classes),
        f"{prefix}tuned_weights": dict(zip(names, tuned.tolist())),
        f"{prefix}ensemble_log_loss_weights": _summary(y_test, soft_vote(test_probas, by_log_loss), classes),
        f"{prefix}log_loss_weights": dict(zip(names, by_log_loss.tolist())),
    }


def _calibrated(ensemble: SoftVotingEnsemble, p: Predictions) -> dict[str, np.ndarray]:
    """Each member's probabilities with its temperature: what it votes with."""
    return {n: m.calibrate(p.raw[n]) for n, m in ensemble.members.items()}


def _summary(y_true: np.ndarray, proba: np.ndarray, classes) -> dict:
    m = classification_metrics(y_true, proba, classes)
    return {k: m[k] for k in SUMMARY}
