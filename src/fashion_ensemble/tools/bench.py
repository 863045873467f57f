"""`fashion-ensemble bench`: how fast training and inference are on this machine, against the usual way.

- training images/s of each member with the project's trainer (`train_member`: data as one tensor, batched
  augmentation, channels-last, fused AdamW) against a baseline written the common way (a torch `Dataset` +
  `DataLoader` with per-sample transforms, fp32, default memory format, default AdamW), same model, same batch size,
  same augmentation; the best of a few alternating rounds of each;
- model FLOP utilisation (MFU): the model's FLOPs per image (counted by torch's FlopCounterMode) × images/s over the
  machine's fp32 matmul peak, measured here too;
- the ceiling that the convolutions set: each of a member's convolutions timed alone (forward and backward, one
  training batch, channels-last), summed, against the baseline's step: the speed-up that the trainer would reach if
  everything else in its step (BatchNorm, ReLU, pooling, loss, optimizer, data) took no time;
- ensemble inference at batch 1,000 and batch-1 latency (p50, p99): PyTorch eager fp32, and the public API
  (`predict_proba`) on each engine, PyTorch and ONNX Runtime; and batch-1 p50 with the "I don't know" score
  (`predict_with_ood`, what `predict` and the service ask);
- time to accuracy: from a `default` run folder's history, the wall time at which validation accuracy first reached
  each milestone.

Nothing here asserts a timing; `tiny=True` runs every part on a few batches so that a test keeps it working.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from fashion_ensemble.config import GREY, MemberConfig, TrainConfig, profile
from fashion_ensemble.members import build_model
from fashion_ensemble.model.ensemble import Member, SoftVotingEnsemble
from fashion_ensemble.model.inference import native_bf16, to_nchw
from fashion_ensemble.model.probabilities import member_proba
from fashion_ensemble.model.runs import RunFolder
from fashion_ensemble.training.trainer import train_member

MILESTONES = (0.85, 0.90, 0.92, 0.93, 0.94)


@dataclass(frozen=True)
class BenchConfig:
    train_images: int = 6144  # per member and per trainer: ~5 s of DS-CNN training on 2 cores
    train_rounds: int = 3  # ours and the baseline alternate; each one's best round counts, since a shared machine's
    # noise only ever slows a round down (one round each swung the ANN's ratio from 1.75× to 2.2× here)
    infer_images: int = 1000  # the batch for inference throughput
    latency_calls: int = 200  # batch-1 calls for p50/p99
    peak_seconds: float = 2.0  # of matmuls for the peak, in each of its three windows
    conv_calls: int = 10  # timed calls of each convolution's forward and of its backward, best of three rounds


TINY = BenchConfig(train_images=256, train_rounds=1, infer_images=64, latency_calls=5, peak_seconds=0.1,
                   conv_calls=1)


def matmul_peak_gflops(seconds: float = 2.0, n: int = 1024) -> float:
    """The best fp32 matmul rate over `seconds` of n×n products, in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def flops_per_image(model: torch.nn.Module, train: bool) -> float:
    """FLOPs per image (the model's input shape): the forward pass counted by FlopCounterMode; training is 3× that,
    the usual convention (the backward pass costs twice the forward). Not counted directly: FlopCounterMode's
    backward count ignores convolution groups, so it puts a depthwise layer's backward 33× too high (measured: 130
    instead of 40 MFLOP)."""
    x = torch.rand(32, *getattr(model, "input_shape", GREY))
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / len(x) * (3 if train else 1)


def best_seconds(fn, calls: int, rounds: int = 3) -> float:
    """Seconds per call of fn(), the best of `rounds` rounds of `calls` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best


def conv_ms_per_step(model: torch.nn.Module, batch_size: int, calls: int) -> float:
    """Milliseconds of one training step's convolutions alone: each conv of `model` run forward and backward (grads
    of weights, and of inputs but the first layer's) on random channels-last tensors of its shapes at `batch_size`,
    the best of three rounds of `calls`. Warm caches and no other work in between: a lower bound of their share of
    the real step. 0 for a model without convolutions."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, inp, out: shapes.append((m, inp[0].shape)))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.rand(batch_size, *getattr(model, "input_shape", GREY)))
    for h in hooks:
        h.remove()
    total = 0.0
    for i, (conv, shape) in enumerate(shapes):
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        w = conv.weight.detach().contiguous(memory_format=torch.channels_last)
        args = (conv.stride, conv.padding, conv.dilation)
        grad = torch.randn_like(F.conv2d(x, w, None, *args, conv.groups))
        forward = functools.partial(F.conv2d, x, w, None, *args, conv.groups)
        backward = functools.partial(torch.ops.aten.convolution_backward, grad, x, w, None, *args, False, [0, 0],
                                     conv.groups, [i > 0, True, False])  # grad of the input, the weight; no bias
        total += best_seconds(forward, calls) * 1e3 + best_seconds(backward, calls) * 1e3
    return total


class PerSampleDataset(Dataset):
    """The common way: uint8 images, each converted, flipped, shifted and normalised on its own in __getitem__."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, max_shift: int = 2):
        self.images, self.labels, self.max_shift = images, labels, max_shift

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        x = to_nchw(torch.tensor(self.images[i][None], dtype=torch.float32).div(255))[0]  # (C, H, W), a copy
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        k = self.max_shift
        dy, dx = torch.randint(-k, k + 1, (2,)).tolist()
        h, w = x.shape[1:]
        x = F.pad(x, (k, k, k, k))[:, k + dy : k + dy + h, k + dx : k + dx + w]
        return (x - 0.286) / 0.353, int(self.labels[i])


def baseline_train_images_per_s(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
                                cfg: TrainConfig) -> float:
    """One epoch of a plain loop over a DataLoader of per-sample transforms: images/s."""
    loader = DataLoader(PerSampleDataset(images, labels), batch_size=cfg.batch_size, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return len(images) / (time.perf_counter() - start)


def ours_train_images_per_s(mcfg: MemberConfig, images: np.ndarray, labels: np.ndarray,
                            shape: tuple[int, int, int] = GREY, classes: int = 10, precision: str = "fp32") -> float:
    """One augmented epoch of the project's trainer on the same images, in `precision`: images/s (its own epoch
    timer)."""
    cfg = dataclasses.replace(mcfg.train, epochs=1, precision=precision)
    model = build_model(mcfg.kind, mcfg.model, classes, shape)
    _, history = train_member(model, (images, labels), (images[:256], labels[:256]), cfg, seed=0, progress=False)
    return history[0]["images_per_s"]


def eager_proba(ensemble: SoftVotingEnsemble, images: np.ndarray) -> np.ndarray:
    """The usual eval loop: fp32, default memory format, one batch, no_grad; each member's TTA and temperature as
    everywhere (probabilities.py)."""
    x = to_nchw(torch.tensor(images, dtype=torch.float32).div(255))
    out = 0
    with torch.no_grad():
        for member, w in zip(ensemble.members.values(), ensemble.weights.values()):
            out = out + w * member_proba(member.model, x, tta_flip=member.tta_flip, tta_shift=member.tta_shift,
                                         temperature=member.temperature)
    return out.numpy()


def images_per_s(fn, images: np.ndarray, min_seconds: float) -> float:
    fn(images)
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < min_seconds:
        fn(images)
        calls += 1
    return calls * len(images) / (time.perf_counter() - start)


def latency_ms(fn, image: np.ndarray, calls: int) -> tuple[float, float]:
    fn(image)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn(image)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def time_to_accuracy(run_dir: Path) -> dict:
    """From a run folder's history: the training time (s, epoch times summed, the members one after the other as
    `run` trains them) at which each member's validation accuracy first reached each milestone."""
    history = RunFolder(run_dir).history()["members"]
    out, elapsed = {}, 0.0
    for name, h in history.items():
        reached = {}
        for e in h["epochs"]:
            elapsed += e["seconds"]
            for m in MILESTONES:
                if e["val_accuracy"] >= m and str(m) not in reached:
                    reached[str(m)] = round(elapsed, 1)
        out[name] = reached
    return out


def run_bench(run_dir: str | Path | None, config: BenchConfig, images: np.ndarray, labels: np.ndarray) -> dict:
    """Everything above, as one flat dict (the `--json` output), timing training on `images` (uint8 model inputs, the
    run's training images): the members of the run's config, else of the `default` profile."""
    cfg = RunFolder(run_dir).config() if run_dir is not None else profile("default")
    shape, classes = cfg.data.input_shape, int(labels.max()) + 1  # every class is in a training part (data.py)

    def model_of(mcfg):
        return build_model(mcfg.kind, mcfg.model, classes, shape)

    images, labels = images[: config.train_images], labels[: config.train_images].astype(np.int64)
    # The peak is measured before training, before inference and at the end, and the best counts: on a shared
    # machine one 2-s window ranged 90-181 GFLOP/s in a day, and a low peak would inflate every MFU below.
    peaks = [matmul_peak_gflops(config.peak_seconds)]
    # fp32 against the fp32 baseline; bf16 beside it only where the CPU computes it natively (emulated, it is slower)
    precisions = ["fp32", *(["bf16"] if native_bf16(torch.device("cpu")) else [])]
    result: dict = {"threads": torch.get_num_threads(), "precisions": precisions, "members": list(cfg.members)}
    flops: dict[str, float] = {}  # per image, for each rate below

    for name, mcfg in cfg.members.items():
        ours = base = 0.0
        for _ in range(config.train_rounds):
            ours = max(ours, ours_train_images_per_s(mcfg, images, labels, shape, classes))
            torch.manual_seed(0)
            base = max(base, baseline_train_images_per_s(model_of(mcfg), images, labels, mcfg.train))
        flops[f"{name}_train"] = flops[f"{name}_baseline_train"] = flops_per_image(model_of(mcfg), train=True)
        result |= {f"{name}_train_img_s": round(ours, 1), f"{name}_baseline_train_img_s": round(base, 1),
                   f"{name}_train_speedup": round(ours / base, 3),
                   f"{name}_train_mflops_per_image": round(flops[f"{name}_train"] / 1e6, 2)}
        if "bf16" in precisions:
            bf16 = max(ours_train_images_per_s(mcfg, images, labels, shape, classes, "bf16")
                       for _ in range(config.train_rounds))
            result |= {f"{name}_train_img_s_bf16": round(bf16, 1), f"{name}_bf16_speedup": round(bf16 / ours, 3)}
        conv_ms = conv_ms_per_step(model_of(mcfg), mcfg.train.batch_size, config.conv_calls)
        if conv_ms > 0:  # the rate if nothing but the convolutions took time, and what it allows
            bound = mcfg.train.batch_size / conv_ms * 1e3
            flops[f"{name}_conv_bound_train"] = flops[f"{name}_train"]
            result |= {f"{name}_conv_ms_per_step": round(conv_ms, 3), f"{name}_conv_bound_train_img_s": round(bound, 1),
                       f"{name}_train_speedup_ceiling": round(bound / base, 3)}

    if run_dir is not None:
        ensemble = RunFolder(run_dir).load()
    else:  # untrained members of the default profile: the same shapes, so the same speed
        ensemble = SoftVotingEnsemble({n: Member.from_config(m, model_of(m)) for n, m in cfg.members.items()})
    infer_flops = sum(flops_per_image(m.model, train=False) * m.views for m in ensemble.members.values())
    fast = copy.deepcopy(ensemble)
    fast.engine = "onnx"  # the public API on ONNX Runtime, as `fe.load` gives it where it is installed
    batch = images[: config.infer_images]
    engines = {"torch": ensemble, "onnx": fast}
    paths = {"eager": lambda x: eager_proba(ensemble, x), **{k: m.predict_proba for k, m in engines.items()}}
    result["ensemble_infer_mflops_per_image"] = round(infer_flops / 1e6, 2)
    peaks.append(matmul_peak_gflops(config.peak_seconds))
    for path, fn in paths.items():
        rate = images_per_s(fn, batch, min_seconds=3 * config.peak_seconds / 2)
        p50, p99 = latency_ms(fn, batch[:1], config.latency_calls)
        flops[f"{path}_infer"] = infer_flops
        result |= {f"{path}_infer_img_s": round(rate, 1),
                   f"{path}_latency_p50_ms": round(p50, 3), f"{path}_latency_p99_ms": round(p99, 3)}
        if path in engines and ensemble.ood is not None:  # what `predict` and the service ask: with the signal
            p50, _ = latency_ms(engines[path].predict_with_ood, batch[:1], config.latency_calls)
            result[f"{path}_ood_latency_p50_ms"] = round(p50, 3)
    peaks.append(matmul_peak_gflops(config.peak_seconds))

    peak = max(peaks)
    result |= {"machine_peak_gflops": round(peak, 1), "machine_peak_gflops_windows": [round(p, 1) for p in peaks]}
    for key, per_image in flops.items():
        result[f"{key}_mfu"] = round(per_image * result[f"{key}_img_s"] / (peak * 1e9), 4)
    fastest = max(paths, key=lambda p: result[f"{p}_infer_img_s"])
    result |= {"fastest_infer_path": fastest, "ensemble_infer_img_s": result[f"{fastest}_infer_img_s"],
               "ensemble_infer_mfu": result[f"{fastest}_infer_mfu"],
               "ensemble_latency_p50_ms": result[f"{fastest}_latency_p50_ms"],
               "ensemble_latency_p99_ms": result[f"{fastest}_latency_p99_ms"],
               "onnx_latency_p50_ms": result["onnx_latency_p50_ms"]}
    if run_dir is not None:
        result["time_to_accuracy_s"] = time_to_accuracy(Path(run_dir))
    return result


def format_result(r: dict) -> str:
    """The table `fashion-ensemble bench` prints."""
    windows = ", ".join(f"{p:g}" for p in r["machine_peak_gflops_windows"])
    lines = [f"fp32 matmul peak: {r['machine_peak_gflops']} GFLOP/s, the best of {windows} ({r['threads']} threads)",
             "",
             f"{'training':<10} {'ours img/s':>11} {'baseline img/s':>15} {'speed-up':>9} {'MFU ours':>9} "
             f"{'MFU base':>9} {'MFLOP/img':>10}"]
    for name in r.get("members", ("ann", "cnn")):
        lines.append(f"{name:<10} {r[f'{name}_train_img_s']:>11,.0f} {r[f'{name}_baseline_train_img_s']:>15,.0f} "
                     f"{r[f'{name}_train_speedup']:>8.2f}× {r[f'{name}_train_mfu']:>9.1%} "
                     f"{r[f'{name}_baseline_train_mfu']:>9.1%} {r[f'{name}_train_mflops_per_image']:>10}")
    for name in r.get("members", ("ann", "cnn")):
        if f"{name}_train_img_s_bf16" in r:
            lines.append(f"{name}: bf16 (native here) {r[f'{name}_train_img_s_bf16']:,.0f} img/s, "
                         f"{r[f'{name}_bf16_speedup']:.2f}× its fp32")
    lines.append(f"precisions timed: {', '.join(r['precisions'])} (bf16 only where the CPU has it natively)")
    for name in r.get("members", ("ann", "cnn")):
        if f"{name}_conv_ms_per_step" in r:
            bound = r[f"{name}_conv_bound_train_img_s"]
            lines.append(f"{name}: its convolutions alone take {r[f'{name}_conv_ms_per_step']:.1f} ms of a training "
                         f"step, {r[f'{name}_train_img_s'] / bound:.0%} of ours; with all else free: {bound:,.0f} "
                         f"img/s, {r[f'{name}_train_speedup_ceiling']:.2f}× the baseline, "
                         f"MFU {r[f'{name}_conv_bound_train_mfu']:.1%}")
    lines += ["", f"{'inference':<10} {'img/s @1000':>11} {'MFU':>7} {'p50 ms @1':>10} {'p99 ms @1':>10} "
                  f"{'+ood p50':>9}   ({r['ensemble_infer_mflops_per_image']} MFLOP per image)"]
    for path in ("eager", "torch", "onnx"):
        ood = f"{r[f'{path}_ood_latency_p50_ms']:>9.2f}" if f"{path}_ood_latency_p50_ms" in r else f"{'':>9}"
        lines.append(f"{path:<10} {r[f'{path}_infer_img_s']:>11,.0f} {r[f'{path}_infer_mfu']:>7.1%} "
                     f"{r[f'{path}_latency_p50_ms']:>10.2f} {r[f'{path}_latency_p99_ms']:>10.2f} {ood}")
    if "time_to_accuracy_s" in r:
        lines += ["", "time to validation accuracy (s of training, members one after the other):"]
        for name, reached in r["time_to_accuracy_s"].items():
            lines.append(f"  {name}: " + ", ".join(f"{m} at {s:,.0f} s" for m, s in reached.items()))
    return "\n".join(lines)
