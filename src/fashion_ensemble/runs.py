"""The run folder: save and `load`. Weights in safetensors, everything else JSON; nothing is ever unpickled.

    runs/<name>/config.json       RunConfig (rebuilds every model)
    runs/<name>/<member>.safetensors   weights and buffers (incl. normalisation statistics) of each member
    runs/<name>/ensemble.json     member names, kinds and temperatures, voting weights
    runs/<name>/history.json      per member, per epoch: losses, accuracies, learning rate, augmentation flag
    runs/<name>/metrics.json      {"protocol", "seed", "models": {"ann"|"cnn"|"ensemble": {...}}}
    runs/<name>/report.md + *.png
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import RunConfig
from .ensemble import Member, SoftVotingEnsemble
from .errors import UserError
from .models import build_model

FORMAT = "fashion-ensemble/1"


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path.parent}: {path.name} is missing; is this a complete fashion-ensemble run folder?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def save_weights(path: Path, model: torch.nn.Module, kind: str) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": FORMAT, "kind": kind})


def save_members(run_dir: Path, members: dict[str, Member], weights: dict[str, float], extra: dict) -> None:
    for name, member in members.items():
        save_weights(run_dir / f"{name}.safetensors", member.model, member.kind)
    write_json(run_dir / "ensemble.json", {
        "format": FORMAT,
        "members": {name: {"kind": m.kind, "weights_file": f"{name}.safetensors", "temperature": m.temperature}
                    for name, m in members.items()},
        "weights": weights,
        **extra,
    })


def load(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> SoftVotingEnsemble:
    """Rebuild the ensemble from a run folder alone: config.json, ensemble.json and the members' safetensors."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    config = RunConfig.from_dict(read_json(run_dir / "config.json"))
    spec = read_json(run_dir / "ensemble.json")
    members = {}
    for name, info in spec.get("members", {}).items():
        member_cfg = config.members.get(name)
        if member_cfg is None:
            raise UserError(f"{run_dir}: ensemble.json names member {name!r}, which config.json does not define")
        model = build_model(member_cfg.kind, member_cfg.model)
        model.load_state_dict(load_weights(run_dir / info["weights_file"], model))
        members[name] = Member(member_cfg.kind, model, device, tta_flip=member_cfg.tta_flip,
                               temperature=info.get("temperature", 1.0))
    return SoftVotingEnsemble(members, [spec["weights"][name] for name in members])


def load_weights(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Read a safetensors file and check it against `model`'s parameters by name and shape."""
    if not path.is_file():
        raise UserError(f"{path.parent}: {path.name} is missing; the run folder is incomplete")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a safetensors file ({e}); weights are never read from pickles") from None
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise UserError(
            f"{path}: tensors do not match the model in config.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise UserError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, the model in config.json needs "
                f"{tuple(expected[key].shape)}"
            )
    return state
