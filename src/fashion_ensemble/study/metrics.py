"""Pure metric functions: arrays in, JSON-ready values out. Computed with scikit-learn; nothing prints."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)

from fashion_ensemble.config.classes import CLASSES, SIMILAR_CLASSES
from fashion_ensemble.model.probabilities import fit_temperature, temperature_scale


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes=CLASSES) -> dict:
    """Accuracy, macro precision/recall/F1, per-class scores, confusion matrix (rows: true, columns: predicted),
    the most confused pairs and, for Fashion-MNIST's classes, the confusions among the similar upper-body ones.
    Fractions in [0, 1]."""
    labels = np.arange(len(classes))
    y_pred = proba.argmax(axis=1)
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    scores = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "macro_f1": float(f.mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),  # mean recall over the classes present
        "log_loss": _log_loss(y_true, proba),
        "accuracy_ci95": list(bootstrap_accuracy_ci(y_true, y_pred)),
        "ece": expected_calibration_error(y_true, proba),  # 15 bins
        "errors": int((y_pred != y_true).sum()),
        "n": int(len(y_true)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
        "most_confused": most_confused(cm, classes),
    }
    if set(SIMILAR_CLASSES) <= set(classes):  # the garment group the paper names; another data set has none
        scores["similar_class_confusions"] = similar_class_confusions(cm, classes)
    return scores


def most_confused(cm: np.ndarray, classes=CLASSES, top: int = 5) -> list[dict]:
    """The `top` unordered class pairs by errors in both directions: [{"pair": [a, b], "a_as_b", "b_as_a", "total"}]."""
    cm = np.asarray(cm)
    pairs = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            total = int(cm[i, j] + cm[j, i])
            if total:
                pairs.append({"pair": [classes[i], classes[j]], "a_as_b": int(cm[i, j]), "b_as_a": int(cm[j, i]),
                              "total": total})
    return sorted(pairs, key=lambda d: -d["total"])[:top]


def similar_class_confusions(cm: np.ndarray, classes=CLASSES, similar=SIMILAR_CLASSES) -> dict:
    """The confusion sub-matrix among the similar classes, and what share of all errors falls inside it."""
    cm = np.asarray(cm)
    similar = [c for c in similar if c in classes]
    idx = [list(classes).index(c) for c in similar]
    sub = cm[np.ix_(idx, idx)]
    errors_inside = int(sub.sum() - np.trace(sub))
    errors_all = int(cm.sum() - np.trace(cm))
    return {
        "classes": list(similar),
        "matrix": sub.tolist(),
        "errors": errors_inside,
        "share_of_all_errors": errors_inside / errors_all if errors_all else 0.0,
    }


def bootstrap_accuracy_ci(y_true: np.ndarray, y_pred: np.ndarray, *, n_boot: int = 2000, level: float = 0.95,
                          seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the accuracy (test images resampled with replacement).

    Resampling n images of which k are right gives a Binomial(n, k/n) count of right ones, so the bootstrap
    distribution is drawn exactly, without materialising n_boot × n indices."""
    correct = np.asarray(y_true) == np.asarray(y_pred)
    n = len(correct)
    rng = np.random.default_rng(seed)
    accs = rng.binomial(n, correct.mean(), size=n_boot) / n
    alpha = (1.0 - level) / 2
    return float(np.quantile(accs, alpha)), float(np.quantile(accs, 1.0 - alpha))


def top_errors(y_true: np.ndarray, proba: np.ndarray, classes, k: int | None = 16,
               origins: np.ndarray | None = None) -> list[dict]:
    """The `k` most confident wrong predictions (fastai's top losses; all of them when k is None): [{"index",
    "true", "predicted", "confidence"}, and "origin" (the image's file) when `origins` are given], from the most
    confident down; "index" counts in the part scored."""
    pred = proba.argmax(1)
    wrong = np.flatnonzero(pred != y_true)
    order = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:k]
    return [{"index": int(i), **({} if origins is None else {"origin": str(origins[i])}),
             "true": classes[int(y_true[i])], "predicted": classes[int(pred[i])],
             "confidence": float(proba[i, pred[i]])} for i in order]


def mcnemar_exact(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """McNemar's exact test of two classifiers on the same images: the discordant counts and the two-sided p-value
    of a binomial test (b of b + c successes at p = 1/2). b: A right and B wrong; c: A wrong and B right."""
    from scipy.stats import binomtest

    a_ok, b_ok = np.asarray(pred_a) == y_true, np.asarray(pred_b) == y_true
    b, c = int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"both_right": int((a_ok & b_ok).sum()), "a_right_b_wrong": b, "a_wrong_b_right": c,
            "both_wrong": int((~a_ok & ~b_ok).sum()), "p_value": p}


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    """ECE: the bin-size-weighted mean |accuracy - confidence| over `bins` equal-width confidence bins in (0, 1]."""
    r = reliability(y_true, proba, bins)
    n = sum(r["count"])
    return float(sum(c / n * abs(a - f) for a, f, c in zip(r["accuracy"], r["confidence"], r["count"]) if c))


def reliability(y_true: np.ndarray, proba: np.ndarray, bins: int = 15) -> dict:
    """Per confidence bin k, holding (k/bins, (k+1)/bins]: mean confidence, accuracy and count (None when empty)."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == np.asarray(y_true)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    out = {"confidence": [], "accuracy": [], "count": []}
    for k in range(bins):
        mask = which == k
        out["count"].append(int(mask.sum()))
        out["confidence"].append(float(confidence[mask].mean()) if mask.any() else None)
        out["accuracy"].append(float(correct[mask].mean()) if mask.any() else None)
    return out


def calibration(y_val, val_proba, y_test, test_proba, bins: int = 15) -> dict:
    """Temperature fit on validation, applied to the test probabilities: ECE, log-loss and reliability bins,
    before and after."""
    t = fit_temperature(y_val, val_proba)
    scaled = temperature_scale(test_proba, t)
    return {
        "temperature": t,
        "ece": expected_calibration_error(y_test, test_proba, bins),
        "ece_scaled": expected_calibration_error(y_test, scaled, bins),
        "log_loss": _log_loss(y_test, test_proba),
        "log_loss_scaled": _log_loss(y_test, scaled),
        "reliability": reliability(y_test, test_proba, bins),
        "reliability_scaled": reliability(y_test, scaled, bins),
    }


def _log_loss(y_true, proba) -> float:
    return float(log_loss(y_true, np.clip(proba, 1e-15, 1.0), labels=list(range(proba.shape[1]))))
