"""The ensemble as one ONNX graph, and ONNX Runtime running it: the fast engine behind `fe.load`'s predictions.

Every graph takes "images": float32 (N, 28, 28) in [0, 1], garment bright on black (Fashion-MNIST's uint8 / 255, or
`preprocess`'s output / 255), with N free — or the run's own geometry, (N, S, S) greyscale or (N, S, S, 3) RGB, named
in the metadata's "input_shape" (channels, height, width). The ensemble's graph returns "probabilities" (N, classes)
and each member's "<member>_probabilities", then, when the run has the "I don't know" signal, "ood_raw" (N,): its raw
score, which the metadata's "ood_reference" (validation's raw scores) turns into `ood_score` = the share of those
below it (flagged above 1 - "ood_flag_rate"); a member's graph returns "probabilities". Test-time augmentation,
temperatures and the voting weights are inside the graphs, so ONNX Runtime gives what the PyTorch members give. The
class names, the weights and the input convention are in each model's metadata. Writing the files: serving/export.py.

Why an engine (docs/performance.md#one-image): at batch 1 the eager PyTorch members spend most of a call launching
operators (2.7 ms for `quick`'s ensemble on 2 cores); ONNX Runtime folds BatchNorm, fuses Conv+ReLU and runs the
whole ensemble, TTA views and "I don't know" distances included, as one graph (0.4 ms).
"""

from __future__ import annotations

import copy
import functools
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fashion_ensemble.errors import UserError
from fashion_ensemble.model import ood
from fashion_ensemble.model.inference import array_shape, describe_shape, model_inputs, to_nchw
from fashion_ensemble.model.probabilities import member_proba

OPSET = 17
SMALL_BATCH = 2  # OnnxEnsemble runs batches up to this size on one thread
# Images × TTA views that OnnxEnsemble gives one session run: a larger batch leaves the caches. Measured on 2 cores,
# images/s through `predict_proba`: `best` with shift TTA (10 views) 88-108 at 1,000 images a run, 243-284 at
# 25-128; `best` without (2 views) 550-700 at 2,000, 1,160-1,460 at 32-500; `default` 2,200-2,600 against 2,950-4,100.
VIEWS_PER_RUN = 512


@functools.cache
def onnxruntime_available() -> bool:
    """Whether ONNX Runtime can be imported here (it is a dependency, but a trimmed install may lack it)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """Checked (N, C, S, S) → the graphs' input, (N, S, S) greyscale or (N, S, S, C)."""
    return np.ascontiguousarray(x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1))


class MemberGraph(nn.Module):
    """images (N, S, S) or (N, S, S, C) → probabilities (N, classes), with the member's TTA (mirror, shifts) and
    temperature (probabilities.py, as the PyTorch member; every view in one batch: fewer operator launches).
    With `features`: (probabilities, the images' own features (N, D), unmoved and unflipped), from the same pass."""

    def __init__(self, member, features: bool = False):
        super().__init__()
        self.model = copy.deepcopy(member.model).cpu().float().eval()  # the member itself stays put
        self.tta_flip = member.tta_flip
        self.tta_shift = member.tta_shift
        self.temperature = member.temperature
        self.features = features

    def forward(self, images: torch.Tensor):
        x = to_nchw(images)
        if not self.features:
            return member_proba(self.model, x, tta_flip=self.tta_flip, tta_shift=self.tta_shift,
                                temperature=self.temperature, one_call=True)
        kept = []

        def logits_of(batch):
            f = self.model.features(batch)
            kept.append(f[: x.shape[0]])  # the images themselves come first in a TTA batch
            return self.model.classify(f)

        return member_proba(logits_of, x, tta_flip=self.tta_flip, tta_shift=self.tta_shift,
                            temperature=self.temperature, one_call=True), kept[0]


class OODGraph(nn.Module):
    """The members' features → the "I don't know" signal's raw score (N,), as `ood.Detector.raw` computes it."""

    def __init__(self, detector: ood.Detector, names: list[str]):
        super().__init__()
        for i, name in enumerate(names):
            s = detector.members[name]
            const = np.einsum("kd,de,ke->k", s.means, s.precision, s.means)
            for key, value in {"means": s.means.T, "precision": s.precision, "const": const,
                               "moments": [s.log_mean, s.log_std]}.items():
                self.register_buffer(f"{key}{i}", torch.tensor(np.asarray(value), dtype=torch.float32))
        self.count = len(names)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(features[0].shape[0])
        for i, f in enumerate(features):
            means, precision, const, moments = (getattr(self, f"{k}{i}") for k in ("means", "precision", "const",
                                                                                   "moments"))
            g = f @ precision
            d = (g * f).sum(1, keepdim=True) - 2 * (g @ means) + const  # (N, classes) squared distances
            total = total + (d.min(1).values.clamp_min(1e-12).log() - moments[0]) / moments[1]
        return total


class EnsembleGraph(nn.Module):
    """images (N, S, S) or (N, S, S, C) → (ensemble probabilities, *each member's probabilities), each
    (N, classes), and when the ensemble has the "I don't know" signal its raw score (N,) last."""

    def __init__(self, ensemble, uint8: bool = False):
        super().__init__()
        detector = getattr(ensemble, "ood", None)
        self.members = nn.ModuleList(MemberGraph(m, features=detector is not None) for m in ensemble.members.values())
        self.ood = OODGraph(detector, list(ensemble.members)) if detector is not None else None
        self.register_buffer("weights", torch.tensor(list(ensemble.weights.values()), dtype=torch.float32))
        self.uint8 = uint8  # input uint8 pixels 0-255, divided by 255 inside: a 0-255 float cannot be fed by mistake

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.uint8:
            images = images.to(torch.float32) / 255.0
        outs = [member(images) for member in self.members]
        probas = [o[0] for o in outs] if self.ood is not None else outs
        ensemble = sum(w * p for w, p in zip(self.weights, probas))
        if self.ood is None:
            return (ensemble, *probas)
        return (ensemble, *probas, self.ood([o[1] for o in outs]))


def ensemble_onnx(ensemble, uint8: bool = False):
    """A SoftVotingEnsemble as an in-memory onnx.ModelProto (`uint8`: its input uint8 pixels 0-255, not floats in
    [0, 1])."""
    names = list(ensemble.members)
    outputs = ["probabilities", *(f"{n}_probabilities" for n in names)]
    metadata = {**graph_metadata(ensemble, uint8), "members": json.dumps(names),
                "views": str(max(m.views for m in ensemble.members.values()))}  # OnnxEnsemble sizes its runs by it
    detector = getattr(ensemble, "ood", None)
    if detector is not None:  # "ood_raw" → ood_score: the share of these validation raw scores below it
        outputs.append("ood_raw")
        metadata |= {"ood_flag_rate": repr(detector.flag_rate),
                     "ood_reference": json.dumps([float(f"{v:.6g}") for v in detector.reference])}
    return to_onnx(EnsembleGraph(ensemble, uint8), ensemble.input_shape, outputs, metadata, uint8)


def graph_metadata(ensemble, uint8: bool = False) -> dict[str, str]:
    shape = ensemble.input_shape
    batch = ", ".join(map(str, ("N", *array_shape(shape))))
    pixels = "uint8 0-255" if uint8 else "float32 in [0, 1] (uint8 pixels / 255; values outside are wrong input)"
    return {"classes": json.dumps(ensemble.classes), "weights": json.dumps(ensemble.weights),
            "input_shape": json.dumps(list(shape)), "pipeline": ensemble.pipeline,
            "input_dtype": "uint8" if uint8 else "float32", "input_range": "[0, 255]" if uint8 else "[0, 1]",
            "input": f"images: ({batch}) {pixels}, {describe_shape(shape)}, garment bright on black; see "
                     "docs/onnx.md for the preprocessing of a photo"}


def to_onnx(graph: nn.Module, input_shape, output_names: list[str], metadata: dict[str, str],
             uint8: bool = False):
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; its graphs are what we test
        torch.onnx.export(
            graph.eval(), (torch.zeros(2, *array_shape(input_shape), dtype=torch.uint8 if uint8 else torch.float32),),
            buf, input_names=["images"],
            output_names=output_names,
            dynamic_axes={name: {0: "N"} for name in ["images", *output_names]}, opset_version=OPSET, dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


class OnnxEnsemble:
    """An ensemble run by ONNX Runtime, with `SoftVotingEnsemble`'s inference methods: from an exported file (a path
    or its bytes) or from a SoftVotingEnsemble, converted in memory (~0.2 s; the first in a process also imports the
    exporter, ~0.8 s). `fe.load` does this itself on its first prediction (its engine "auto"), so most code never
    names this class."""

    def __init__(self, model, threads: int | None = None):
        """`model`: a path to an exported ensemble .onnx, its bytes, or a SoftVotingEnsemble to convert."""
        import onnxruntime as ort

        detector = None
        if hasattr(model, "members") and hasattr(model, "weights"):  # a SoftVotingEnsemble
            detector = model.ood  # the very detector: its flag rate, changed later, still counts
            model = ensemble_onnx(model).SerializeToString()
        elif isinstance(model, (str, os.PathLike)):
            model = Path(model).read_bytes()

        def session(threads):
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            # Idle ORT threads would spin for the next call, taking the cores that decode a server's requests.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

        self.session = session(threads)
        # A batch of one or two images runs on one thread: waking a second costs more than it saves (measured on
        # 2 cores, p50: batch 1 0.83 vs 1.14 ms; batch 2 1.50 vs 1.53; batch 8 5.15 vs 3.89). Made on first use.
        self._small = self.session if threads == 1 else None
        self._small_session = lambda: session(1)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "members" not in meta:
            raise UserError("this ONNX file is a single member's; OnnxEnsemble needs the ensemble's (model.onnx)")
        self.classes = json.loads(meta["classes"])
        self.weights = json.loads(meta["weights"])
        self.members = {name: None for name in json.loads(meta["members"])}  # names only: the graph runs them all
        self.input_shape = tuple(json.loads(meta.get("input_shape", "[1, 28, 28]")))  # files before it: 28×28 grey
        self.pipeline = meta.get("pipeline", "preprocess")
        self.uint8 = self.session.get_inputs()[0].type == "tensor(uint8)"  # model.uint8.onnx
        self.batch = max(1, VIEWS_PER_RUN // int(meta.get("views", "2")))  # images a run (files before it: 2 views)
        self.ood = detector  # the "I don't know" signal: the graph gives its raw score, this maps it (files: none)
        if detector is None and "ood_reference" in meta:
            self.ood = ood.Detector({}, json.loads(meta["ood_reference"]), float(meta["ood_flag_rate"]))

    def run(self, x: torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        """Checked inputs (N, C, S, S) float32 in [0, 1] (`model_inputs`) → (probabilities (N, classes), each
        member's, ood scores (N,) or None), float64."""
        x = to_nhwc(x.numpy())
        if self.uint8:
            x = np.round(x * 255).astype(np.uint8)
        if len(x) <= SMALL_BATCH:
            if self._small is None:
                self._small = self._small_session()
            session = self._small
        else:
            session = self.session
        runs = [session.run(None, {"images": x[i : i + self.batch]}) for i in range(0, max(len(x), 1), self.batch)]
        outs = [np.concatenate(parts).astype(np.float64) for parts in zip(*runs)]
        scores = self.ood.percentile(outs.pop()) if self.ood is not None else None
        outs = [o / o.sum(axis=1, keepdims=True) for o in outs]  # float32 rounding: rows sum to 1 again
        if not np.isfinite(outs[0]).all():
            raise UserError("the model gave non-finite probabilities; its weights are damaged (train it again)")
        return outs[0], dict(zip(self.members, outs[1:])), scores

    def predict_with_ood(self, images) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        """As `SoftVotingEnsemble.predict_with_ood`: probabilities, each member's, and ood scores (or None)."""
        return self.run(model_inputs(images, self.input_shape, self.pipeline))

    def predict_proba_members(self, images) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.predict_with_ood(images)[:2]

    def is_ood(self, images) -> np.ndarray:
        """True where an input looks unlike the training images (as `SoftVotingEnsemble.is_ood`)."""
        return self.ood.flags(self.ood_score(images))

    def ood_score(self, images) -> np.ndarray:
        if self.ood is None:
            raise UserError("this ONNX file has no 'I don't know' signal: export it again from a run folder that has "
                            "one (`fashion-ensemble ood RUN_DIR`, then `fashion-ensemble export RUN_DIR`)")
        return self.predict_with_ood(images)[2]

    def predict_proba(self, images) -> np.ndarray:
        return self.predict_proba_members(images)[0]

    def predict(self, images) -> np.ndarray:
        return self.predict_proba(images).argmax(axis=1)

    def predict_labels(self, images) -> list[str]:
        return [self.classes[i] for i in self.predict(images)]
