"""The run folder, the one owner of its layout: paths, naming, completeness, reading and writing, and `load`.
Weights in safetensors, everything else JSON; nothing is ever unpickled.

    runs/<name>/config.json             RunConfig (rebuilds every model)
    runs/<name>/<member>.safetensors    weights and buffers (incl. normalisation statistics) of each member
    runs/<name>/ensemble.json           format, members (kind, weights file, temperature), voting weights, weighting
    runs/<name>/history.json            {"members": {name: {"best_epoch", "epochs": [...]}}, "timing": {...}}
    runs/<name>/metrics.json            test-split scores: {"protocol", "seed", "models": {...}, ...}
    runs/<name>/report.md + *.png       the report (report.py) and its plots
    runs/.<name>.partial/               the same folder while a run writes it, with checkpoints/<member>.safetensors;
                                        renamed to <name> when complete (a complete folder holds no checkpoints)

Every folder written so far is format 1 ("fashion-ensemble/1" in ensemble.json); a reader for an older layout goes
here when the layout changes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
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
CONFIG, ENSEMBLE, HISTORY, METRICS, REPORT = "config.json", "ensemble.json", "history.json", "metrics.json", "report.md"
PARTIAL = ".partial"


def default_path(cfg: RunConfig, *, seeds: str | None = None, prefix: str = "", root: str | os.PathLike = "runs"
                 ) -> Path:
    """runs/[<prefix>]<profile>-<protocol>-<seeds>-<time>; `seeds` defaults to "seed<N>" (a multi-seed study
    passes e.g. "seeds0-2", an ablation the prefix "ablation-")."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{prefix}{cfg.profile}-{cfg.data.protocol}-{seeds or f'seed{cfg.seed}'}-{stamp}"


class RunFolder:
    """A run folder at `path`; while a run writes it, it lives beside that as `.<name>.partial` (`partial`).
    Give either name: the partial one is mapped back to the folder's."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.name.startswith(".") and path.name.endswith(PARTIAL):
            path = path.with_name(path.name[1 : -len(PARTIAL)])
        self.path = path
        self.partial = path.with_name(f".{path.name}{PARTIAL}")

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- state ---------------------------------------------------------------------------------------------------
    def is_complete(self) -> bool:
        return (self.path / METRICS).is_file()

    def is_partial(self) -> bool:
        """A stopped (or running) run's folder exists: `resume_study` can go on from it."""
        return self.partial.is_dir()

    @property
    def current(self) -> Path:
        """Where the files are now: the folder once complete, else the partial one being written."""
        return self.path if self.path.is_dir() or not self.partial.is_dir() else self.partial

    # -- paths -----------------------------------------------------------------------------------------------------
    def checkpoint(self, member: str) -> Path:
        return self.partial / "checkpoints" / f"{member}.safetensors"

    @property
    def tensorboard(self) -> Path:
        return self.partial / "tensorboard"

    @property
    def report(self) -> Path:
        return self.current / REPORT

    def file(self, name: str) -> Path:
        return self.current / name

    # -- reading -------------------------------------------------------------------------------------------------
    def config(self) -> RunConfig:
        return RunConfig.from_dict(read_json(self.file(CONFIG)))

    def metrics(self) -> dict:
        return read_json(self.file(METRICS))

    def history(self) -> dict:
        """{"members": ..., "timing": {...}}; "timing" is {} for runs made before it was recorded."""
        history = read_json(self.file(HISTORY))
        history.setdefault("timing", {})
        return history

    def load(self, device: str | torch.device = "cpu") -> SoftVotingEnsemble:
        """Rebuild the ensemble from the folder alone: config.json, ensemble.json and the members' safetensors."""
        if not self.current.is_dir():
            raise UserError(f"run folder {self.path} does not exist")
        config = self.config()
        spec = read_json(self.file(ENSEMBLE))
        members = {}
        for name, info in spec.get("members", {}).items():
            member_cfg = config.members.get(name)
            if member_cfg is None:
                raise UserError(f"{self.current}: ensemble.json names member {name!r}, which config.json does not "
                                "define")
            model = build_model(member_cfg.kind, member_cfg.model)
            model.load_state_dict(load_weights(self.file(info["weights_file"]), model))
            members[name] = Member(member_cfg.kind, model, device, tta_flip=member_cfg.tta_flip,
                                   temperature=info.get("temperature", 1.0))
        return SoftVotingEnsemble(members, [spec["weights"][name] for name in members])

    # -- writing (into the partial folder) ------------------------------------------------------------------------
    def start(self, cfg: RunConfig) -> None:
        """A fresh partial folder holding config.json (a stale one from a stopped run is replaced)."""
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        write_json(self.partial / CONFIG, cfg.to_dict())

    def save_ensemble(self, ensemble: SoftVotingEnsemble, weighting: str) -> None:
        """Each member's weights and ensemble.json (kinds, files, temperatures, voting weights)."""
        for name, member in ensemble.members.items():
            save_weights(self.partial / f"{name}.safetensors", member.model, member.kind)
        write_json(self.partial / ENSEMBLE, {
            "format": FORMAT,
            "members": {name: {"kind": m.kind, "weights_file": f"{name}.safetensors", "temperature": m.temperature}
                        for name, m in ensemble.members.items()},
            "weights": ensemble.weights,
            "weighting": weighting,
        })

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.partial / METRICS, metrics)

    def write_history(self, members: dict, timing: dict) -> None:
        write_json(self.partial / HISTORY, {"members": members, "timing": timing})

    def complete(self) -> Path:
        """Drop the checkpoints and rename the partial folder to its final name; returns that."""
        shutil.rmtree(self.partial / "checkpoints", ignore_errors=True)
        self.partial.rename(self.path)
        return self.path


def load(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> SoftVotingEnsemble:
    """Rebuild the ensemble from a run folder alone (see `RunFolder.load`)."""
    return RunFolder(run_dir).load(device)


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
