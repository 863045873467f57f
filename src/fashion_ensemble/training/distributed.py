"""The process's device and distributed session: training on several processes or machines with
DistributedDataParallel, launched by `torchrun`.

`start(device)` is the one place both are decided, once per process: it resolves "auto", and under `torchrun`
(WORLD_SIZE > 1) joins the process group (gloo on CPU, NCCL on CUDA), which stays open until the process exits, so
that a multi-seed study or an ablation trains every run in one session. Calling it again returns the same device.
`torchrun` sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address.

Every rank holds the whole data set, draws the same shuffled order and augmentation (the same seeded
generator) and trains on its share of each global batch (every world_size-th image); DDP averages the gradients.
After each epoch, rank 0's state (weights and BatchNorm statistics) is broadcast, so every rank validates the same
model and takes the same early-stopping decision. Only rank 0 writes files.
"""

from __future__ import annotations

import atexit
import inspect
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fashion_ensemble.errors import UserError


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto": CUDA when PyTorch sees a GPU, else the CPU; "cpu", "cuda" or a torch.device as given, if present."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; choose auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU here; use --device cpu or auto")
    return device


def start(device: str | torch.device = "auto") -> torch.device:
    """This process's device, with the process group joined when launched by torchrun with WORLD_SIZE > 1 (this
    rank's GPU on CUDA). Idempotent: once the group is open, the device it was opened with is returned."""
    global _device
    if dist.is_available() and dist.is_initialized():
        return _device
    device = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    atexit.register(_close)
    _device = device
    return device


_device: torch.device | None = None  # the device the process group was opened with


def _close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module) -> DistributedDataParallel:
    """DDP that averages gradients but leaves BatchNorm buffers alone in forward (`broadcast_state` syncs them once
    an epoch); the initial state is synced from rank 0 either way."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:  # newer name, same meaning
        return DistributedDataParallel(model, forward_sync_buffers=False)
    return DistributedDataParallel(model, broadcast_buffers=False)


def broadcast_state(model: torch.nn.Module) -> None:
    """Make every rank's parameters and buffers equal to rank 0's."""
    if world()[1] > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def broadcast_object(obj):
    """Rank 0's value of a picklable object (e.g. the run folder's name, which holds a timestamp) on every rank."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()
