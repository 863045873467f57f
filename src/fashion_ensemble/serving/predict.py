"""Predictions as records, the same for the CLI's `predict --json` and the HTTP service, and as CSV rows
(`predict --csv`):

    {"file": "shoe.jpg", "label": "Sneaker", "ood": false, "ood_score": 0.41,
     "probabilities": {"Sneaker": 0.97, ...}, "members": {"ann": {"Sneaker": 0.91, ...}, "cnn": {...}}}

Probabilities are listed from the most likely class down, `top_k` of them (all 10 by default). "ood" says whether
the input looks unlike the training images ("I don't know": the label is a guess), "ood_score" how unlike, in [0, 1]
(ood.py); both are null for a model without that signal (a run folder or ONNX file made before it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fashion_ensemble.errors import UserError
from fashion_ensemble.model.preprocess import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, image_files, preprocess
from fashion_ensemble.text import spreadsheet

DECIMALS = 6  # 1e-6 is far below any decision; full float64 digits only make the JSON unreadable


def geometry(ensemble) -> dict:
    """`preprocess`'s size, channels and pipeline for this ensemble's input, as its training data was read:
    {"size": 28, "channels": 1, "pipeline": "preprocess"} for Fashion-MNIST."""
    channels, size, _ = ensemble.input_shape
    return {"size": size, "channels": channels, "pipeline": getattr(ensemble, "pipeline", "preprocess")}


def records(ensemble, images: np.ndarray, top_k: int | None = None) -> list[dict]:
    """(N, S, S) or (N, S, S, 3) model inputs → N records: the ensemble's label and probabilities, and each member's.
    `ensemble`: anything with `predict_with_ood`, `ood` and `classes` (SoftVotingEnsemble, OnnxEnsemble)."""
    if len(images) == 0:
        return []
    proba, member_probas, scores = ensemble.predict_with_ood(images)
    flags = ensemble.ood.flags(scores) if scores is not None else None
    classes = ensemble.classes
    return [
        {
            "label": classes[int(proba[i].argmax())],
            "ood": None if flags is None else bool(flags[i]),
            "ood_score": None if scores is None else round(float(scores[i]), DECIMALS),
            "probabilities": ranked(proba[i], classes, top_k),
            "members": {name: ranked(p[i], classes, top_k) for name, p in member_probas.items()},
        }
        for i in range(len(proba))
    ]


def ranked(p: np.ndarray, classes, top_k: int | None = None) -> dict[str, float]:
    """{class: probability} from the most likely down, the first `top_k` (all when None)."""
    order = np.argsort(-p, kind="stable")[:top_k]
    return {classes[j]: round(float(p[j]), DECIMALS) for j in order}


def find_images(inputs: list[str]) -> list[Path]:
    """The files named, and the image files (by suffix) under the folders named; refused when there are none."""
    files = image_files(inputs)
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {' '.join(map(str, inputs))}")
    return files


def predict_files(ensemble, files: list[Path], top_k: int | None = None,
                  batch_size: int = 256, max_pixels: int = MAX_PIXELS) -> Iterator[dict]:
    """One record per file, in order; a file that cannot be used gives {"file", "error"} and the rest go on."""
    shape = geometry(ensemble)
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        inputs, errors = {}, {}
        for f in chunk:
            try:
                inputs[f] = preprocess(f, name=str(f), max_pixels=max_pixels, **shape)
            except ImageError as e:
                errors[f] = str(e)
        good = list(inputs)
        results = dict(zip(good, records(ensemble, np.stack([inputs[f] for f in good]), top_k) if good else []))
        for f in chunk:
            yield {"file": str(f), "error": errors[f]} if f in errors else {"file": str(f), **results[f]}


def csv_header(top_k: int) -> list[str]:
    """file, label, class_1, probability_1, ..., class_k, probability_k, ood, ood_score, error."""
    ranks = [f"{what}_{i}" for i in range(1, top_k + 1) for what in ("class", "probability")]
    return ["file", "label", *ranks, "ood", "ood_score", "error"]


def csv_row(rec: dict, top_k: int) -> list:
    """One record as a row under `csv_header(top_k)`: a file that could not be read has only its file and error.
    User text (file and class names) cannot start a spreadsheet formula (text.spreadsheet)."""
    if "error" in rec:
        return [spreadsheet(rec["file"]), *[""] * (2 * top_k + 3), spreadsheet(rec["error"])]
    top = [x for c, p in list(rec["probabilities"].items())[:top_k] for x in (spreadsheet(c), f"{p:.{DECIMALS}f}")]
    top += [""] * (2 * top_k - len(top))  # fewer classes than top_k
    ood = "" if rec["ood"] is None else str(rec["ood"]).lower()
    score = "" if rec["ood_score"] is None else f"{rec['ood_score']:.{DECIMALS}f}"
    return [spreadsheet(rec["file"]), spreadsheet(rec["label"]), *top, ood, score, ""]
