import numpy as np
import pytest
import torch

from fashion_ensemble.config import ANNConfig, EnsembleConfig
from fashion_ensemble.errors import UserError
from fashion_ensemble.members import build_model
from fashion_ensemble.model.ensemble import Member, SoftVotingEnsemble, check_weights, soft_vote, tune_weights
from fashion_ensemble.model.inference import check_images, predict_logits
from fashion_ensemble.model.probabilities import temperature_scale


def test_soft_vote_is_the_weighted_average():
    a = np.array([[0.8, 0.2], [0.4, 0.6]])
    b = np.array([[0.2, 0.8], [0.0, 1.0]])
    np.testing.assert_allclose(soft_vote([a, b], [1, 1]), [[0.5, 0.5], [0.2, 0.8]])
    np.testing.assert_allclose(soft_vote([a, b], [3, 1]), [[0.65, 0.35], [0.3, 0.7]])


@pytest.mark.parametrize(
    "weights, message",
    [([1.0], "one voting weight per member"), ([1, -1], "non-negative"), ([0, 0], "not all be zero"),
     ([1, float("nan")], "finite")],
)
def test_bad_weights_say_what_was_received(weights, message):
    with pytest.raises(UserError, match=message):
        check_weights(weights, ["ann", "cnn"])


def test_tune_weights_prefers_the_better_member():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    good = np.eye(10)[y] * 0.9 + 0.01
    bad = rng.dirichlet(np.ones(10), 300)
    w = tune_weights([bad, good], y)
    assert w.sum() == pytest.approx(1.0)
    assert w[1] > w[0]
    acc = (soft_vote([bad, good], w).argmax(1) == y).mean()
    assert acc == 1.0


def test_tune_weights_keeps_equal_weights_on_a_tie():
    p = np.eye(10)[np.arange(10)]
    np.testing.assert_allclose(tune_weights([p, p], np.arange(10)), [0.5, 0.5])


def test_log_loss_weights_are_the_grid_point_of_least_validation_log_loss():
    # oracle: every weight of the first member on the 0.05 grid, scored by hand; a case where accuracy picks otherwise
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 400)
    onehot = np.eye(10)[y]
    a = 0.5 * onehot + 0.5 * rng.dirichlet(np.ones(10), 400)  # right, unsure, on the first 360 images
    a[360:] = rng.dirichlet(np.ones(10), 40)  # noise on the rest
    b = 0.3 * onehot + 0.7 * rng.dirichlet(np.ones(10), 400)  # weak on the first 360
    b[360:] = 0.9 * onehot[360:] + 0.01  # right and sure on the rest
    grid = np.linspace(0, 1, 21)
    nll = [-np.log(soft_vote([a, b], [w, 1 - w])[np.arange(400), y]).mean() for w in grid]
    w = tune_weights([a, b], y, criterion="log_loss")
    assert w[0] == pytest.approx(grid[int(np.argmin(nll))]) and 0 < w[0] < 1
    assert w.sum() == pytest.approx(1.0)
    assert tune_weights([a, b], y)[0] != pytest.approx(w[0])  # the criterion matters here
    with pytest.raises(UserError, match="'accuracy' or 'log_loss'"):
        tune_weights([a, b], y, criterion="f1")


def test_an_unknown_weighting_is_refused_by_the_config_before_any_training():
    assert EnsembleConfig(weights="log_loss").weights == "log_loss"
    with pytest.raises(UserError, match="ensemble.weights must be one of equal, tuned, log_loss, got 'tunde'"):
        EnsembleConfig(weights="tunde")


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((28, 28), np.uint8), "one image"),
        (np.zeros((2, 3, 512, 512), np.uint8), r"got shape \(2, 3, 512, 512\)"),
        (np.zeros((2, 28, 28), np.int32), "dtype int32"),
        (np.full((2, 28, 28), 255.0), r"\[0, 1\]"),
        ([[0]], "numpy array"),
    ],
)
def test_check_images_errors(images, message):
    with pytest.raises(UserError, match=message):
        check_images(images)


def test_uint8_and_float_inputs_agree_and_rows_sum_to_one():
    torch.manual_seed(0)
    members = {n: Member("ann", build_model("ann", ANNConfig(hidden=(16,)))) for n in ("ann", "ann2")}
    ens = SoftVotingEnsemble(members, [1, 3])
    assert ens.weights == {"ann": 0.25, "ann2": 0.75}
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    p = ens.predict_proba(images)
    assert p.shape == (5, 10) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(p, ens.predict_proba(images.astype(np.float32) / 255.0))
    np.testing.assert_allclose(
        p, 0.25 * members["ann"].predict_proba(images) + 0.75 * members["ann2"].predict_proba(images)
    )


def test_tta_flip_averages_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = build_model("ann", ANNConfig(hidden=(16,)))
    plain, tta = Member("ann", model), Member("ann", model, tta_flip=True)
    images = np.random.default_rng(1).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    expected = (plain.predict_proba(images) + plain.predict_proba(images[:, :, ::-1].copy())) / 2
    np.testing.assert_allclose(tta.predict_proba(images), expected, atol=1e-12)


def test_tta_shift_averages_the_image_moved_each_way_and_with_flip_their_mirrors():
    torch.manual_seed(0)
    model = build_model("ann", ANNConfig(hidden=(16,)))
    plain = Member("ann", model)
    images = np.random.default_rng(3).integers(1, 256, (4, 28, 28), dtype=np.uint8)  # no zero pixel: edges show

    def moved(x, dy, dx):  # by hand: pad two pixels of zeros, then cut the window out again
        padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))
        return padded[:, 2 - dy : 30 - dy, 2 - dx : 30 - dx].copy()

    for k in (1, 2):
        views = [images] + [moved(images, dy, dx) for dy, dx in ((k, 0), (-k, 0), (0, k), (0, -k))]
        assert moved(images, k, 0)[:, :k].max() == 0 and np.array_equal(moved(images, k, 0)[:, k:], images[:, :-k])
        expected = np.mean([plain.predict_proba(v) for v in views], axis=0)
        shifted = Member("ann", model, tta_shift=k)
        np.testing.assert_allclose(shifted.predict_proba(images), expected, atol=1e-12)
        both = Member("ann", model, tta_flip=True, tta_shift=k)
        expected = np.mean([plain.predict_proba(w) for v in views for w in (v, v[:, :, ::-1].copy())], axis=0)
        np.testing.assert_allclose(both.predict_proba(images), expected, atol=1e-12)
        assert (plain.views, shifted.views, both.views) == (1, 5, 10)


def test_a_members_temperature_rescales_its_probabilities_as_logits_divided_by_t():
    torch.manual_seed(0)
    model = build_model("ann", ANNConfig(hidden=(16,)))
    images = np.random.default_rng(2).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    logits = predict_logits(model, check_images(images)).double().numpy()
    hot = Member("ann", model, temperature=0.5).predict_proba(images)
    e = np.exp(logits / 0.5 - (logits / 0.5).max(1, keepdims=True))
    np.testing.assert_allclose(hot, e / e.sum(1, keepdims=True), atol=1e-9)  # by hand: softmax(z / T)
    # softmax(log p · T) gives back the member's own probabilities: how a report undoes the temperature
    np.testing.assert_allclose(temperature_scale(hot, 1 / 0.5), Member("ann", model).predict_proba(images), atol=1e-9)
    with pytest.raises(UserError, match=r"temperature must be a number in \[0.01, 100\], got 0"):
        Member("ann", model, temperature=0)
