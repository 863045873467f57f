"""`run --init-from RUN_DIR|pretrained`: each member starts from a trained run's member of the same name and kind.

- The members take the starting run's architectures (its `model` configs), so that every weight has a place.
- A different set of classes: every tensor is copied but the classifier's last layer (its shape differs), which
  starts fresh; the same classes (more images of them) copy everything: training continues.
- A different input (channels or size) is refused in one line: the first layer's weights would have no meaning.
- The schedule suits a warm start: the recipe's peak rate times WARM_LR, after a warm-up of at least WARM_UP of the
  steps (LC3's phases otherwise as the recipe's).
config.json records where the run started (`init`: the folder and its weights digest, ensemble.json's run_id); a
replay or resume of that config refuses a folder whose weights have changed since.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fashion_ensemble.config import InitConfig, RunConfig, with_train
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.runs import RunFolder, run_or_pretrained

WARM_LR = 0.3  # a warm start's peak rate, as a share of the recipe's: its weights are already near a good minimum
WARM_UP = 0.1  # its warm-up, at least this share of the steps: the new classifier settles before the body moves


def init_from(cfg: RunConfig, source: str) -> RunConfig:
    """`cfg` starting from the run folder `source` ("pretrained": the shipped model): its members' architectures
    and a warm start's schedule, and `init` recording the folder and its weights' digest."""
    folder = _folder(source)
    start = folder.config()
    if start.data.input_shape != cfg.data.input_shape:
        c, s, _ = start.data.input_shape
        raise UserError(f"--init-from {source}: that run's input is {c} channel(s) of {s}×{s} pixels, this data's "
                        f"{cfg.data.input_shape[0]} of {cfg.data.input_shape[1]}×{cfg.data.input_shape[1]}; give "
                        f"--channels {c} --image-size {s} to start from it, or train from random weights")
    shared = [n for n, m in cfg.members.items() if n in start.members and start.members[n].kind == m.kind]
    if not shared:
        raise UserError(f"--init-from {source}: no member of this run ({', '.join(cfg.members)}) has a member of the "
                        f"same name and kind there ({', '.join(start.members)})")
    members = dict(cfg.members)
    for name in shared:
        m = dataclasses.replace(members[name], model=start.members[name].model)
        members[name] = with_train(m, lr=m.train.lr * WARM_LR, warmup_frac=max(m.train.warmup_frac, WARM_UP))
    return cfg.replace(members=members, init=InitConfig(source=str(source), run_id=folder.weights_digest()))


def start_weights(model: torch.nn.Module, cfg: RunConfig, name: str) -> list[str]:
    """Copy into `model` the starting run's weights of member `name`, where the shapes agree (a new set of classes
    keeps its fresh classifier): the names of the tensors left as they were. Refused when the starting folder's
    weights are not those `cfg.init` recorded."""
    folder = _folder(cfg.init.source)
    ensemble = folder.load()
    digest = folder.weights_digest(ensemble)
    if cfg.init.run_id and digest != cfg.init.run_id:  # "": recorded before folders without a run_id had a digest
        raise UserError(f"--init-from {cfg.init.source}: its weights changed since this run started from them "
                        f"(digest {digest!r}, recorded {cfg.init.run_id!r}); start again from the folder "
                        "as it is now (a new run) or restore it")
    if name not in ensemble.members:
        return list(model.state_dict())
    source = ensemble.members[name].model.state_dict()
    state = model.state_dict()
    fresh = [k for k, v in state.items() if k not in source or source[k].shape != v.shape]
    model.load_state_dict({**state, **{k: source[k] for k in state if k not in fresh}})
    return fresh


def _folder(source: str) -> RunFolder:
    folder = RunFolder(run_or_pretrained(None if source == "pretrained" else Path(source)))
    if not folder.is_complete():
        raise UserError(f"--init-from {source}: not a complete run folder (no metrics.json); give a run folder made "
                        "by `fashion-ensemble run`, or `pretrained` for the shipped model")
    return folder
