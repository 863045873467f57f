"""Two of airbench's levers in the trainer: Lookahead's slow weights (TrainConfig.lookahead_k) and BatchNorm scales
frozen with faster biases (bn_frozen_scale, bn_bias_lr): the updates by hand, and what training keeps."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fashion_ensemble.config import ANNConfig, TrainConfig
from fashion_ensemble.errors import UserError
from fashion_ensemble.members import build_model
from fashion_ensemble.model.inference import predict_logits
from fashion_ensemble.training.trainer import lookahead_sync, param_groups, to_tensor, train_member
from helpers import synthetic_images


def tiny():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    return (synthetic_images(y[:500]), y[:500]), (synthetic_images(y[500:], seed=1), y[500:])


def fit(**options):
    train, val = tiny()
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=3, batch_size=50, patience=10, **options)
    return train_member(build_model("ann", ANNConfig(hidden=(32,))), train, val, cfg, seed=0, progress=False)


def test_lookahead_sync_by_hand():
    def net(weight, mean):
        m = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
        m[0].weight.data.fill_(weight)
        m[1].running_mean.fill_(mean)
        return m

    slow, fast = net(0.0, 2.0), net(1.0, 4.0)
    lookahead_sync(slow, fast, alpha=0.25)
    assert slow[0].weight.item() == fast[0].weight.item() == 0.25  # slow moved a quarter; fast restarts there
    assert slow[1].running_mean.item() == 2.0 and fast[1].running_mean.item() == 4.0  # statistics are not weights


def test_lookahead_training_keeps_the_validated_slow_weights():
    plain, _ = fit()
    slow, history = fit(lookahead_k=3)
    assert not torch.equal(plain.body[1].weight, slow.body[1].weight)
    _, val = tiny()
    logits = predict_logits(slow, to_tensor(val[0]), precision=history[-1]["precision"])
    val_loss = F.cross_entropy(logits, torch.from_numpy(val[1])).item()
    assert val_loss == pytest.approx(min(e["val_loss"] for e in history), abs=1e-6)


def test_frozen_bn_scales_stay_and_their_biases_get_their_own_rate():
    model = build_model("ann", ANNConfig(hidden=(32,)))
    cfg = TrainConfig(lr=1e-3, weight_decay=4e-4, bn_frozen_scale=True, bn_bias_lr=4.0)
    main, biases = param_groups(model, cfg)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and [id(p) for p in biases["params"]] == [id(m.bias) for m in norms]
    assert (biases["lr"], biases["weight_decay"]) == (4e-3, 1e-4)  # decay per step as the rest's: lr·wd alike
    assert not any(p is m.weight for p in main["params"] for m in norms)  # the scales are trained by nobody
    assert len(main["params"]) + len(biases["params"]) + len(norms) == len(list(model.parameters()))
    assert len(param_groups(build_model("ann", ANNConfig(hidden=(32,))), TrainConfig())) == 1  # off: one group

    trained, history = fit(bn_frozen_scale=True, bn_bias_lr=4.0)
    norms = [m for m in trained.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)  # as initialised
    assert all(m.bias.abs().sum() > 0 for m in norms)  # trained


def test_one_weight_average_at_a_time():
    with pytest.raises(UserError, match="one weight average at a time"):
        TrainConfig(lookahead_k=5, ema_decay=0.999)
