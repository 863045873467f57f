"""ONNX export: the whole ensemble as one graph, and each member alone, written as files (`fashion-ensemble
export`). The graphs and what they take and give: model/engine.py; how to run the files elsewhere: docs/onnx.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from fashion_ensemble.errors import UserError
from fashion_ensemble.model.engine import (
    MemberGraph,
    OnnxEnsemble,  # noqa: F401  (imported from here before engine.py)
    ensemble_onnx,
    graph_metadata,
    to_onnx,
)
from fashion_ensemble.model.ensemble import SoftVotingEnsemble


def export_onnx(ensemble: SoftVotingEnsemble, out: str | os.PathLike) -> list[Path]:
    """Write the ensemble to `out` (e.g. model.onnx: float32 input in [0, 1]), each member beside it
    (model.ann.onnx, ...), and the ensemble with a uint8 input (model.uint8.onnx: pixels 0-255 as they are, so that
    a 0-255 float input cannot be given by mistake). Returns the paths written."""
    if Path(out).name in ("", ".", ".."):
        raise UserError(f"--onnx needs a file name such as model.onnx, got {str(out)!r}")
    out = Path(out)
    if out.suffix != ".onnx":
        out = out.with_name(out.name + ".onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    models = {out: ensemble_onnx(ensemble)}
    for name, member in ensemble.members.items():
        models[out.with_name(f"{out.stem}.{name}.onnx")] = to_onnx(
            MemberGraph(member), ensemble.input_shape, ["probabilities"],
            {**graph_metadata(ensemble), "member": name, "kind": member.kind})
    models[out.with_name(f"{out.stem}.uint8.onnx")] = ensemble_onnx(ensemble, uint8=True)
    for path, model in models.items():
        tmp = path.with_name(f".{path.name}.partial")
        try:
            tmp.write_bytes(model.SerializeToString())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)  # written and renamed, or failed (a full disk): nothing left behind
    return list(models)
