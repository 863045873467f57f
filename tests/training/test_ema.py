"""The weights' moving average (TrainConfig.ema_decay): the update by hand, and training keeps what it validated."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fashion_ensemble.config import ANNConfig, TrainConfig
from fashion_ensemble.members import build_model
from fashion_ensemble.model.inference import predict_logits
from fashion_ensemble.training.trainer import to_tensor, train_member, update_ema
from helpers import synthetic_images


def test_update_ema_by_hand():
    def net(weight, mean, batches):
        m = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
        m[0].weight.data.fill_(weight)
        m[1].running_mean.fill_(mean)
        m[1].num_batches_tracked.fill_(batches)
        return m

    ema, model = net(0.0, 2.0, 0), net(1.0, 4.0, 7)
    update_ema(ema, model, decay=0.9, step=0)  # d = min(0.9, 1/10) = 0.1: mostly the model
    assert ema[0].weight.item() == pytest.approx(0.9)
    assert ema[1].running_mean.item() == pytest.approx(0.1 * 2.0 + 0.9 * 4.0)
    assert ema[1].num_batches_tracked.item() == 7  # integers are copied, not averaged
    update_ema(ema, model, decay=0.9, step=100)  # d = min(0.9, 101/110) = 0.9
    assert ema[0].weight.item() == pytest.approx(0.9 * 0.9 + 0.1 * 1.0)
    assert model[0].weight.item() == 1.0  # the model itself is untouched


def test_training_keeps_the_validated_average():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    train, val = (synthetic_images(y[:500]), y[:500]), (synthetic_images(y[500:], seed=1), y[500:])

    def fit(ema_decay):
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=3, batch_size=50, patience=10, ema_decay=ema_decay)
        return train_member(build_model("ann", ANNConfig(hidden=(32,))), train, val, cfg, seed=0, progress=False)

    plain, _ = fit(0.0)
    averaged, history = fit(0.9)
    # The returned weights are the average's, not the last step's: they differ from the run without it ...
    assert not torch.equal(plain.body[1].weight, averaged.body[1].weight)
    # ... and they are the ones validation chose: their validation loss is the history's best, computed in the
    # precision training validated in (bf16 where `auto` finds it native).
    logits = predict_logits(averaged, to_tensor(val[0]), precision=history[-1]["precision"])
    val_loss = F.cross_entropy(logits, torch.from_numpy(val[1])).item()
    assert val_loss == pytest.approx(min(e["val_loss"] for e in history), abs=1e-6)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_restore_best_off_keeps_the_last_weights(ema_decay):
    """TrainConfig.restore_best=False (the small-data plan): the model ends as the last epoch validated it, whichever
    epoch was best: its validation loss is the last epoch's."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    train, val = (synthetic_images(y[:500]), y[:500]), (synthetic_images(y[500:], seed=1), y[500:])
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=4, batch_size=50, lr=0.05, patience=10, ema_decay=ema_decay, restore_best=False)
    model, history = train_member(build_model("ann", ANNConfig(hidden=(32,))), train, val, cfg, seed=0,
                                  progress=False)
    logits = predict_logits(model, to_tensor(val[0]), precision=history[-1]["precision"])
    val_loss = F.cross_entropy(logits, torch.from_numpy(val[1])).item()
    assert val_loss == pytest.approx(history[-1]["val_loss"], abs=1e-6)


def test_balanced_class_weights_are_scikit_learn_s_and_weight_the_loss():
    from sklearn.utils.class_weight import compute_class_weight

    from fashion_ensemble.training.trainer import balanced_weights

    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy())
    assert torch.allclose(balanced_weights(labels, 3), torch.tensor(expected, dtype=torch.float32))
    assert balanced_weights(torch.tensor([0, 0, 2]), 3)[1] == 0  # a class with no image weighs nothing
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    w = balanced_weights(labels, 3)
    weighted = F.cross_entropy(logits, F.one_hot(y, 3).float(), weight=w)  # as train_step computes it
    by_hand = -(w[y] * logits.log_softmax(1)[torch.arange(4), y]).mean()
    assert torch.allclose(weighted, by_hand)
