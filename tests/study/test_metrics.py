import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from fashion_ensemble.study.metrics import classification_metrics, most_confused, similar_class_confusions

CLASSES3 = ("a", "b", "c")


def onehot(pred, k=3):
    return np.eye(k)[pred]


def test_hand_computed_three_class_case():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y, onehot(pred), classes=CLASSES3)
    # precision: a 2/2, b 1/2, c 1/2; recall: a 2/3, b 1/2, c 1/1
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    f1 = [2 * p * r / (p + r) for p, r in ((1, 2 / 3), (0.5, 0.5), (0.5, 1))]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                   "support": 3}
    assert m["errors"] == 2


def test_agrees_with_sklearn_on_random_ten_class_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    proba = rng.dirichlet(np.ones(10), 500)
    proba[np.arange(500), y] += 0.3 * rng.random(500)
    proba /= proba.sum(1, keepdims=True)
    pred = proba.argmax(1)
    m = classification_metrics(y, proba)
    assert m["macro_precision"] == pytest.approx(precision_score(y, pred, average="macro", zero_division=0))
    assert m["macro_recall"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))


def test_most_confused_counts_both_directions():
    cm = np.array([[5, 3, 0], [4, 5, 1], [0, 2, 9]])
    pairs = most_confused(cm, CLASSES3)
    assert pairs[0] == {"pair": ["a", "b"], "a_as_b": 3, "b_as_a": 4, "total": 7}
    assert pairs[1]["pair"] == ["b", "c"] and pairs[1]["total"] == 3
    assert len(pairs) == 2  # a/c never confused


def test_similar_class_confusions_share():
    cm = np.diag([10, 10, 10])
    cm[0, 1], cm[1, 0], cm[2, 0] = 2, 1, 1
    s = similar_class_confusions(cm, CLASSES3, similar=("a", "b"))
    assert s["matrix"] == [[10, 2], [1, 10]]
    assert s["errors"] == 3 and s["share_of_all_errors"] == pytest.approx(3 / 4)


def test_mcnemar_on_a_hand_made_table():
    from scipy.stats import binom

    from fashion_ensemble.study.metrics import mcnemar_exact

    y = np.zeros(20, int)
    a = np.array([0] * 12 + [1] * 8)  # A right on the first 12
    b = np.array([0] * 5 + [1] * 7 + [0] * 2 + [1] * 6)  # B right on 5 of those, and on 2 where A is wrong
    r = mcnemar_exact(y, a, b)
    assert (r["both_right"], r["a_right_b_wrong"], r["a_wrong_b_right"], r["both_wrong"]) == (5, 7, 2, 6)
    # exact two-sided: 2 · P(X ≤ 2), X ~ Binomial(9, 1/2) = 2 · (1 + 9 + 36) / 512
    assert r["p_value"] == pytest.approx(2 * 46 / 512)
    assert r["p_value"] == pytest.approx(2 * binom.cdf(2, 9, 0.5))
    assert mcnemar_exact(y, a, a)["p_value"] == 1.0


def test_ece_on_a_hand_made_case():
    from fashion_ensemble.study.metrics import expected_calibration_error

    # Two bins used: confidence 0.9 (4 images, 3 right: gap 0.15) and 0.6 (2 images, both right: gap 0.4).
    proba = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    y = np.array([0, 0, 0, 1, 0, 0])
    assert expected_calibration_error(y, proba, bins=15) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.4)
    perfect = np.eye(2)[[0, 1, 1]]
    assert expected_calibration_error(np.array([0, 1, 1]), perfect) == 0.0


def test_bootstrap_ci_brackets_the_accuracy():
    from fashion_ensemble.study.metrics import bootstrap_accuracy_ci

    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 2000)
    pred = np.where(rng.random(2000) < 0.9, y, (y + 1) % 10)
    lo, hi = bootstrap_accuracy_ci(y, pred)
    acc = (pred == y).mean()
    assert lo < acc < hi
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(acc * (1 - acc) / 2000), rel=0.15)  # normal approximation


def test_temperature_scaling_on_a_hand_made_case():
    from fashion_ensemble.model.probabilities import fit_temperature, temperature_scale
    from fashion_ensemble.study.metrics import calibration, reliability

    # Logits (2, 0): softmax 0.881 on class 0, right 3 times in 4. The NLL-optimal temperature makes the top
    # probability 0.75: 1/(1 + e^(-2/T)) = 0.75 → T = 2 / ln 3.
    proba = np.tile(np.array([[np.exp(2), 1.0]]) / (np.exp(2) + 1), (4, 1))
    y = np.array([0, 0, 0, 1])
    t = fit_temperature(y, proba)
    assert t == pytest.approx(2 / np.log(3), rel=1e-3)
    assert temperature_scale(proba, t)[0, 0] == pytest.approx(0.75, abs=1e-4)
    assert np.allclose(temperature_scale(proba, 1.0), proba)
    r = reliability(y, proba, bins=15)
    assert sum(r["count"]) == 4 and r["accuracy"][13] == 0.75 and r["confidence"][13] == pytest.approx(0.8808, 1e-3)
    c = calibration(y, proba, y, proba)
    assert c["ece"] == pytest.approx(0.8808 - 0.75, abs=1e-3) and c["ece_scaled"] < 1e-3
    assert c["log_loss_scaled"] < c["log_loss"]


def test_top_errors_are_the_most_confident_mistakes():
    from fashion_ensemble.study.metrics import top_errors

    y = np.array([0, 1, 2, 0])
    proba = np.array([[0.9, 0.1, 0.0], [0.7, 0.3, 0.0], [0.05, 0.9, 0.05], [0.4, 0.6, 0.0]])
    errors = top_errors(y, proba, ["a", "b", "c"], k=2)
    assert errors == [{"index": 2, "true": "c", "predicted": "b", "confidence": 0.9},
                      {"index": 1, "true": "b", "predicted": "a", "confidence": 0.7}]
