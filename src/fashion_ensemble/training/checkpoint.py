"""Training checkpoints: all a member's training needs to go on exactly where it stopped, in one safetensors file
written atomically (a temporary file, then a rename), so that a kill at any moment leaves the previous one whole.

    model.<key>        the model's state: weights, BatchNorm buffers, normalisation statistics
    best.<key>         the best-validation-loss state so far (early stopping restores it at the end)
    ema.<key>          the moving average of the model's state, when training keeps one (TrainConfig.ema_decay)
    slow.<key>         Lookahead's slow weights, when training keeps them (TrainConfig.lookahead_k)
    optim.<i>.<key>    AdamW's state of parameter i: step, exp_avg, exp_avg_sq
    rng.torch          the global CPU generator (dropout); rng.cuda the CUDA one, when training there
    rng.shuffle        the member's own generator (shuffling, augmentation)
    metadata "state"   JSON: the TrainState's fields (next_epoch, stopped, best_loss, bad_epochs, history), the
                       scheduler's state and the optimizer's parameter groups

No pickle: tensors go to safetensors, the rest to JSON (Python floats round-trip exactly through `json`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from fashion_ensemble.errors import UserError


@dataclass
class TrainState:
    """Where a member's training stands after an epoch, besides its tensors."""
    next_epoch: int = 1  # the 1-based epoch to run next
    stopped: bool = False  # early stopping has ended training
    best_loss: float = float("inf")  # the best validation loss so far
    bad_epochs: int = 0  # epochs since the validation loss last improved
    history: list[dict] = field(default_factory=list)  # one train.EpochRecord (as a dict) per epoch run

    def __post_init__(self):  # a checkpoint's metadata is read from disk: checked like any input
        def number(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool)

        ok = {
            "next_epoch": number(self.next_epoch) and self.next_epoch == int(self.next_epoch) >= 1,
            "stopped": isinstance(self.stopped, bool),
            "best_loss": number(self.best_loss),
            "bad_epochs": number(self.bad_epochs) and self.bad_epochs == int(self.bad_epochs) >= 0,
            "history": isinstance(self.history, list) and len(self.history) == self.next_epoch - 1,
        }
        wrong = [f"{name} = {getattr(self, name)!r}" for name, good in ok.items() if not good]
        if wrong:
            raise ValueError(f"training state out of range or of the wrong type: {', '.join(wrong)}")

def save_checkpoint(path: Path, *, model: torch.nn.Module, best_state: dict | None, optimizer: torch.optim.Optimizer,
                    scheduler, generator: torch.Generator, state: TrainState,
                    ema: torch.nn.Module | None = None, slow: torch.nn.Module | None = None) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    if slow is not None:
        tensors |= {f"slow.{k}": v for k, v in slow.state_dict().items()}
    if best_state is not None:
        tensors |= {f"best.{k}": v for k, v in best_state.items()}
    opt = optimizer.state_dict()
    for i, param_state in opt["state"].items():
        tensors |= {f"optim.{i}.{k}": v for k, v in param_state.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.shuffle"] = generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**dataclasses.asdict(state), "scheduler": scheduler.state_dict(), "optimizer_groups": opt["param_groups"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
    except SafetensorError as e:  # a full disk: the previous checkpoint stays whole
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write the checkpoint {tmp} ({e})") from None
    with open(tmp, "rb") as f:  # on disk before the rename, so that a crash cannot leave an empty file behind it
        os.fsync(f.fileno())
    tmp.replace(path)


def load_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    generator: torch.Generator, ema: torch.nn.Module | None = None,
                    slow: torch.nn.Module | None = None) -> tuple[dict | None, TrainState]:
    """Restore model (and its moving average `ema`, or Lookahead's `slow` weights, when kept), optimizer, scheduler
    and generators from `path`; returns (best_state or None, the TrainState)."""
    try:
        return _restore(path, model, optimizer, scheduler, generator, ema, slow)
    except UserError:
        raise
    except Exception as e:  # a damaged or tampered file can fail anywhere in restoring it
        raise UserError(f"{path}: unreadable training checkpoint ({type(e).__name__}: {e}); delete it to restart "
                        "that member") from None


def _restore(path: Path, model, optimizer, scheduler, generator, ema, slow) -> tuple[dict | None, TrainState]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    tensors = load_file(str(path))
    state = TrainState(**{f.name: meta[f.name] for f in dataclasses.fields(TrainState)})
    device = next(model.parameters()).device

    def part(prefix):
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model."))
    if ema is not None:
        ema.load_state_dict(part("ema."))
    if slow is not None:
        slow.load_state_dict(part("slow."))
    best = part("best.")
    opt_state: dict[int, dict] = {}
    for key, value in part("optim.").items():
        i, name = key.split(".", 1)
        opt_state.setdefault(int(i), {})[name] = value
    groups = meta.pop("optimizer_groups")
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    scheduler.load_state_dict(meta.pop("scheduler"))
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.shuffle"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return ({k: v.to(device) for k, v in best.items()} if best else None), state
