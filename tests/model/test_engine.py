"""The engine behind a loaded model's predictions: ONNX Runtime by default, PyTorch on request or where ONNX Runtime
is missing, with the same answers; a graph rebuilt whenever what it was built from changes."""

import copy
import pickle
import threading

import numpy as np
import pytest
import torch

import fashion_ensemble as fe
from fashion_ensemble.errors import UserError
from fashion_ensemble.model import engine as engine_module
from helpers import synthetic_images


@pytest.fixture(scope="module")
def images():
    noise = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)  # some of them flagged "ood"
    return np.concatenate([synthetic_images(np.arange(30) % 10), noise])


def agree(fast, slow, images):
    """The same answers from two ensembles: probabilities and each member's to float32 rounding, the same labels,
    ood scores within one validation image's step (a raw score on a tie may move one place)."""
    p, members, scores = fast.predict_with_ood(images)
    q, members_q, scores_q = slow.predict_with_ood(images)
    np.testing.assert_allclose(p, q, atol=1e-5)
    assert (p.argmax(1) == q.argmax(1)).all()
    for name in members_q:
        np.testing.assert_allclose(members[name], members_q[name], atol=1e-5)
    if scores_q is None:
        assert scores is None
    else:
        np.testing.assert_allclose(scores, scores_q, atol=2 / len(slow.ood.reference))


def test_a_loaded_model_answers_with_onnx_runtime_as_pytorch_does(tiny_run, images):
    fast, slow = fe.load(tiny_run), fe.load(tiny_run, engine="torch")
    assert (fast.engine, fast.engine_in_use, slow.engine_in_use) == ("auto", "onnx", "torch")
    assert "engine auto" in repr(fast)
    agree(fast, slow, images)
    np.testing.assert_allclose(fast.ood_score(images), slow.ood_score(images), atol=2 / len(slow.ood.reference))
    assert (fast.is_ood(images) == slow.is_ood(images)).mean() >= 0.95
    assert fast.predict_labels(images) == slow.predict_labels(images)
    assert fast.predict_proba(images[:1]).sum() == pytest.approx(1.0, abs=1e-12)
    assert fast.predict_proba(images[:0]).shape == (0, 10)


def test_the_graph_follows_every_change_to_the_ensemble(tiny_run, images):
    fast, slow = fe.load(tiny_run), fe.load(tiny_run, engine="torch")
    fast.predict_proba(images)
    built = fast._fast[1]
    fast.predict_proba(images)
    assert fast._fast[1] is built  # nothing changed: the same graph
    for model in (fast, slow):  # the vote, a temperature, the weights in place, a new module, the signal's flag rate
        model.weights = {"ann": 0.8, "cnn": 0.2}
        model.members["cnn"].temperature = 2.0
        with torch.no_grad():
            for p in model.members["ann"].model.parameters():
                p.mul_(0.9)
    agree(fast, slow, images)
    assert fast._fast[1] is not built
    state = copy.deepcopy(slow.members["cnn"].model.state_dict())
    for p in state.values():
        if p.is_floating_point():
            p.add_(0.01)
    for model in (fast, slow):
        model.members["cnn"].model.load_state_dict(state)
        model.ood.flag_rate = 0.2
    agree(fast, slow, images)
    assert (fast.is_ood(images) == slow.is_ood(images)).all()
    for model in (fast, slow):  # a tensor put in a parameter's place, not changed in place
        linear = next(m for m in model.members["ann"].model.modules() if isinstance(m, torch.nn.Linear))
        linear.weight = torch.nn.Parameter(linear.weight.detach() * 1.5)
    agree(fast, slow, images)
    for model in (fast, slow):
        model.ood = None
    assert fast.predict_with_ood(images)[2] is None
    agree(fast, slow, images)
    with pytest.raises(UserError, match="fashion-ensemble ood"):
        fast.ood_score(images)


def test_pytorch_answers_where_onnx_runtime_is_missing(tiny_run, images, monkeypatch):
    monkeypatch.setattr(engine_module, "onnxruntime_available", lambda: False)
    model = fe.load(tiny_run)
    assert model.engine_in_use == "torch"
    agree(model, fe.load(tiny_run, engine="torch"), images)
    model.engine = "onnx"
    with pytest.raises(UserError, match="needs ONNX Runtime: pip install onnxruntime"):
        model.predict_proba(images)
    with pytest.raises(UserError, match="unknown engine 'fast'; choose one of: auto, onnx, torch"):
        fe.load(tiny_run, engine="fast")


def test_copies_pickles_and_threads(tiny_run, images):
    model = fe.load(tiny_run)
    expected = model.predict_proba(images)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other._fast is None and other.engine == "auto"
        np.testing.assert_array_equal(other.predict_proba(images), expected)
    fresh, results = fe.load(tiny_run), []
    built = []
    original = engine_module.OnnxEnsemble.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    engine_module.OnnxEnsemble.__init__ = counting
    try:
        threads = [threading.Thread(target=lambda: results.append(fresh.predict_proba(images))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine_module.OnnxEnsemble.__init__ = original
    assert len(built) == 1 and len(results) == 4  # four threads at once, one graph
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_the_pytorch_path_scores_ood_from_the_same_pass(tiny_run, images):
    """PyTorch's `predict_with_ood` reads each member's features from its probabilities' own pass: the scores
    are those of a separate features pass, exactly, and the probabilities those of `predict_proba`."""
    model = fe.load(tiny_run, engine="torch")
    proba, _, scores = model.predict_with_ood(images)
    separate = model.ood.score({name: m.features(images) for name, m in model.members.items()})
    np.testing.assert_array_equal(scores, separate)
    np.testing.assert_array_equal(proba, model.predict_proba(images))


def test_warm_up_builds_the_engine_before_the_first_prediction(tiny_run, images):
    model = fe.load(tiny_run).warm_up()
    assert model._fast is not None and model._fast[1]._small is not None
    assert model.warm_up() is model


def test_ood_distance_is_the_nearest_class_mahalanobis_distance():
    from fashion_ensemble.model.ood import MemberStats

    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    stats = MemberStats(rng.normal(size=(3, 6)), a @ a.T + np.eye(6), 0.0, 1.0)
    f = rng.normal(size=(5, 6))
    by_hand = [min((x - m) @ stats.precision @ (x - m) for m in stats.means) for x in f]
    np.testing.assert_allclose(stats.distance(f), by_hand, rtol=1e-10)
