"""What one image costs through the public API, part by part (docs/performance.md#one-image).

    python scripts/latency_breakdown.py runs/quick-s0

Times, as the median of many calls on one official test image: `preprocess` of it as a PNG and as a photo (what a
file or an upload costs before the model); the checks and conversion (`model_inputs`); each
PyTorch member's probabilities (its TTA views) and its features pass (what the "I don't know" score reads); the
score from those features, and the per-call constant it once recomputed (einsum over the class means); then the
public API, `fe.load(run, engine=...)`'s `predict_proba` and `predict_with_ood`, on PyTorch and on ONNX Runtime, and
ONNX Runtime's session alone. On a checkout from before the engines (no `engine` argument) it times what exists.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image

import fashion_ensemble as fe
from fashion_ensemble.data.idx import load_raw
from fashion_ensemble.model.inference import model_inputs
from fashion_ensemble.model.preprocess import preprocess


def median_ms(fn, calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    image = load_raw()["test"][0][:1]
    try:
        slow, fast = fe.load(args.run, engine="torch"), fe.load(args.run, engine="onnx")
    except TypeError:  # before the engines: PyTorch only
        slow, fast = fe.load(args.run), None
    rows = [("threads", torch.get_num_threads())]

    def add(what: str, fn) -> None:
        rows.append((what, f"{median_ms(fn, args.calls):.3f} ms"))

    x = model_inputs(image, slow.input_shape, slow.pipeline)
    png = io.BytesIO()
    Image.fromarray(image[0]).save(png, format="PNG")
    photo = io.BytesIO()  # the test image as a product photo: 224×224 RGB, dark on white (loadtest --photos)
    Image.fromarray(255 - image[0]).resize((224, 224)).convert("RGB").save(photo, format="JPEG", quality=90)
    for what, data in (("a 28×28 PNG", png.getvalue()), ("a 224×224 JPEG photo", photo.getvalue())):
        add(f"preprocess {what} (decode, trim, fit)", lambda data=data: preprocess(data))
    add("checks and conversion (model_inputs)", lambda: model_inputs(image, slow.input_shape, slow.pipeline))
    for name, m in slow.members.items():
        add(f"{name}: probabilities, PyTorch ({m.views} view{'s' * (m.views > 1)})", lambda m=m: m._proba(x))
        add(f"{name}: features pass, PyTorch", lambda m=m: m._features(x))
    if slow.ood is not None:
        features = {name: m._features(x) for name, m in slow.members.items()}
        add("ood score from the features", lambda: slow.ood.score(features))
        stats = list(slow.ood.members.values())
        add("  of which the class means' constant, if recomputed",
            lambda: [np.einsum("kd,de,ke->k", s.means, s.precision, s.means) for s in stats])
    for engine, model in (("torch", slow), ("onnx", fast)):
        if model is None:
            continue
        add(f"public API, {engine}: predict_proba", lambda model=model: model.predict_proba(image))
        add(f"public API, {engine}: predict_with_ood", lambda model=model: model.predict_with_ood(image))
    if fast is not None:
        from fashion_ensemble.model.engine import to_nhwc  # here: a checkout before the engines has no engine.py

        session = fast._onnx()
        session.run(x)
        small = session._small
        feed = {"images": to_nhwc(x.numpy())}  # the graph's input, as OnnxEnsemble.run gives it
        add("ONNX Runtime's session.run alone", lambda: small.run(None, feed))
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{what:<{width}}  {value}" for what, value in rows))


if __name__ == "__main__":
    main()
