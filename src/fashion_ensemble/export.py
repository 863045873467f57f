"""ONNX export: the whole ensemble as one graph, and each member alone.

Every graph takes "images": float32 (N, 28, 28) in [0, 1], garment bright on black (Fashion-MNIST's uint8 / 255, or
`preprocess`'s output / 255), with N free. The ensemble's graph returns "probabilities" (N, 10) and each member's
"<member>_probabilities" (N, 10); a member's graph returns "probabilities". Flip test-time augmentation and the voting
weights are inside the graphs, so ONNX Runtime gives what `predict_proba` gives. The class names, the weights and the
input convention are in each model's metadata.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .ensemble import Member, SoftVotingEnsemble

OPSET = 17


class MemberGraph(nn.Module):
    """images (N, 28, 28) → probabilities (N, 10), with the member's flip TTA."""

    def __init__(self, member: Member):
        super().__init__()
        self.model = copy.deepcopy(member.model).cpu().float().eval()  # the member itself stays put
        self.tta_flip = member.tta_flip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1)
        proba = torch.softmax(self.model(x), dim=1)
        if self.tta_flip:
            proba = (proba + torch.softmax(self.model(x.flip(-1)), dim=1)) / 2
        return proba


class EnsembleGraph(nn.Module):
    """images (N, 28, 28) → (ensemble probabilities, *each member's probabilities), each (N, 10)."""

    def __init__(self, ensemble: SoftVotingEnsemble):
        super().__init__()
        self.members = nn.ModuleList(MemberGraph(m) for m in ensemble.members.values())
        self.register_buffer("weights", torch.tensor(list(ensemble.weights.values()), dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        probas = [member(images) for member in self.members]
        ensemble = sum(w * p for w, p in zip(self.weights, probas))
        return (ensemble, *probas)


def export_onnx(ensemble: SoftVotingEnsemble, out: str | os.PathLike) -> list[Path]:
    """Write the ensemble to `out` (e.g. model.onnx) and each member beside it (model.ann.onnx, ...).
    Returns the paths written."""
    out = Path(out)
    if out.suffix != ".onnx":
        out = out.with_suffix(out.suffix + ".onnx") if out.suffix else out.with_suffix(".onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(ensemble.members)
    metadata = {"classes": json.dumps(ensemble.classes), "weights": json.dumps(ensemble.weights),
                "input": "images: float32 (N, 28, 28) in [0, 1], garment bright on black (uint8 pixels / 255)"}
    written = [out]
    _export(EnsembleGraph(ensemble), out, ["probabilities", *(f"{n}_probabilities" for n in names)],
            {**metadata, "members": json.dumps(names)})
    for name, member in ensemble.members.items():
        path = out.with_name(f"{out.stem}.{name}.onnx")
        _export(MemberGraph(member), path, ["probabilities"], {**metadata, "member": name, "kind": member.kind})
        written.append(path)
    return written


def _export(graph: nn.Module, path: Path, output_names: list[str], metadata: dict[str, str]) -> None:
    import onnx

    example = torch.zeros(2, 28, 28)
    tmp = path.with_name(f".{path.name}.partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; its graphs are what we test
        torch.onnx.export(
            graph.eval(), (example,), str(tmp), input_names=["images"], output_names=output_names,
            dynamic_axes={name: {0: "N"} for name in ["images", *output_names]}, opset_version=OPSET, dynamo=False,
        )
    model = onnx.load(str(tmp))
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    tmp.replace(path)
