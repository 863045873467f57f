"""`fashion-ensemble`: a thin layer over the Python API: each command parses, calls one API function and prints.
A user's mistake prints one line and exits 2.

Each command imports the API it calls when it runs, so that using a model (`predict`, `serve`, `export`) never
imports training, and `--help` imports no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from fashion_ensemble import __version__, config
from fashion_ensemble.config import ENGINES, PROFILES, PROTOCOLS
from fashion_ensemble.errors import Notice, UserError
from fashion_ensemble.study.levers import LEVERS

ENGINE_HELP = ("what computes the predictions: auto (default): ONNX Runtime where it is installed and the device is "
               "the CPU, else PyTorch; onnx; torch")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_negative_durations(sys.argv[1:] if argv is None else list(argv)))
    warnings.showwarning = _show_notice
    try:
        return args.func(args)
    except BrokenPipeError:  # `predict ... | head`: the reader has what it wanted; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
        return 0
    except UserError as e:
        print(f"fashion-ensemble: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be written or read: read-only, under a file, a full disk
        print(f"fashion-ensemble: error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("fashion-ensemble: interrupted", *(f"; {note}" for note in getattr(e, "__notes__", [])), sep="",
              file=sys.stderr)
        return 130


def _negative_durations(argv: list[str]) -> list[str]:
    """`--time-limit -5m` as `--time-limit=-5m`, so that it is refused for what it says, not as a missing value."""
    out = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--time-limit" and arg[:1] == "-" and arg[1:2].isdigit():
            out[-1] = f"--time-limit={arg}"
        else:
            out.append(arg)
    return out


_default_showwarning = warnings.showwarning


def _show_notice(message, category, *args, **kwargs):
    """A `Notice` (data left out, an old run folder) as one line on stderr; other warnings as Python shows them."""
    if issubclass(category, Notice):
        print(f"fashion-ensemble: note: {message}", file=sys.stderr, flush=True)
    else:
        _default_showwarning(message, category, *args, **kwargs)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad option reported like every other mistake: one line on stderr, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="fashion-ensemble",
        description="ANN + depthwise-separable CNN soft-voting ensemble on Fashion-MNIST.",
    )
    parser.add_argument("--version", action="version", version=f"fashion-ensemble {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train both members, build the ensemble, write runs/<name>/ with a report")
    run.add_argument("--profile", choices=list(PROFILES), default=None,
                     help="a time budget with its recipe, planned on this machine: quick (2 minutes, a smoke "
                          "run), default (15 minutes, the main job), best (2 hours, the most accurate); or paper "
                          "(the paper's protocol and fixed recipe). README.md: what each buys")
    run.add_argument("--config", default=None, metavar="FILE",
                     help="a RunConfig as JSON instead of a profile: a run folder's config.json, or an overlay "
                          "on a profile ({\"base\": \"default\", \"set\": {...}}, docs/configs/README.md)")
    run.add_argument("--time-limit", default=None, metavar="DURATION",
                     help="plan the schedule so that the whole run (each seed's) ends within this time on this "
                          "machine: 10m, 2h, 90s, 1h30m; each member's step is measured first and its recipe "
                          "scaled to fit (default: the profile's budget; a --set of a member's train.epochs "
                          "without --time-limit trains those epochs as given)")
    run.add_argument("--protocol", choices=PROTOCOLS, default=None,
                     help="paper: 80/10/10 of all 70k; standard: official 60k/10k (default: the profile's)")
    run.add_argument("--init-from", default=None, metavar="RUN_DIR|pretrained",
                     help="start each member from that run's (or the shipped model's) weights and architecture, "
                          "with a warm start's lower rate; other classes get a new classifier layer")
    add_data_options(run)
    add_training_options(run)
    run.add_argument("--seed", type=int, default=None, help="training seed (default 0, or the --config file's)")
    run.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="overrides",
                     help="change one field of the profile or --config, e.g. --set members.cnn.train.epochs=12 "
                          "(repeatable; the run folder's config.json records the result)")
    run.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                     help="N full runs, seeds SEED..SEED+N-1, in OUT/seed<k>/, then OUT/summary.md with mean ± std "
                          "(again with the same --out: completed seeds are skipped, a stopped one resumed)")
    run.add_argument("--out", default=None, help="run folder (default runs/<profile>-<protocol>-seed<N>-<time>)")
    run.add_argument("--resume", default=None, metavar="RUN_DIR",
                     help="go on with a stopped run from its last checkpoints (same result as an uninterrupted run)")
    run.add_argument("--restart", action="store_true",
                     help="start --out over, deleting the checkpoints of a stopped run there (else refused)")
    run.add_argument("--parallel", action="store_true",
                     help="train the members at the same time in separate processes, splitting the cores")
    add_common(run)
    run.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs into the run folder")
    run.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    run.set_defaults(func=cmd_run, profile_default="default")

    ab = sub.add_parser("ablate", help="one run per lever (label smoothing, erasing, width, ...) against the "
                        "profile, and the table of what moved accuracy")
    ab.add_argument("--profile", choices=list(PROFILES), default=None,
                    help="the base (default: quick, 2 min a run; each lever's run gets the base's budget)")
    ab.add_argument("--config", default=None, metavar="FILE", help="a RunConfig as JSON instead of a profile")
    ab.add_argument("--protocol", choices=PROTOCOLS, default=None, help="default: the profile's")
    add_data_options(ab)
    add_training_options(ab)
    ab.add_argument("--seed", type=int, default=None, help="training seed of every run (default 0)")
    ab.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="overrides",
                    help="change one field of the base, e.g. --set members.cnn.train.epochs=12 (repeatable)")
    ab.add_argument("--levers", default=None, metavar="A,B,...",
                    help="which levers (default all): " + ", ".join(LEVERS))
    ab.add_argument("--out", default=None, help="study folder (default runs/ablation-<profile>-<protocol>-seed<N>-"
                    "<time>); again with the same --out, complete runs are kept")
    add_common(ab)
    ab.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    ab.set_defaults(func=cmd_ablate, profile_default="quick")

    ev = sub.add_parser("evaluate", help="re-score a run folder on its test split")
    ev.add_argument("run_dir")
    add_common(ev)
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument("--photos", action="store_true", help="score the test images as users' photos: each saved as a "
                    "224×224 RGB JPEG, dark on white, and read back through preprocess")
    ev.set_defaults(func=cmd_evaluate)

    rv = sub.add_parser("revote", help="fit a finished run's vote again (another weighting or TTA), without training: "
                        "its ensemble.json, metrics and report rewritten")
    rv.add_argument("run_dir", help="a run folder, or a multi-seed study folder (every seed, then its summary)")
    rv.add_argument("--weighting", choices=config.WEIGHTINGS, default=None,
                    help="equal: the plain average; tuned: weights searched on validation accuracy; log_loss: on "
                         "validation log-loss (default: the run's own)")
    rv.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=None,
                    help="temperature-scale each member on validation before voting (default: as the run did)")
    rv.add_argument("--tta-shift", type=int, default=None, metavar="PIXELS",
                    help="every member also averaged over its input moved this many pixels each way (0: off; "
                         "default: as the run did)")
    add_common(rv)
    rv.add_argument("--json", action="store_true", help="print each run's ensemble scores and tests as JSON")
    rv.set_defaults(func=cmd_revote)

    od = sub.add_parser("ood", help="add the 'I don't know' signal to a run folder made before it existed (fit on "
                        "its own split) and print its rates on the test images")
    od.add_argument("run_dir")
    add_common(od)
    od.add_argument("--flag-rate", type=fraction, default=None,
                    help="share of validation images to flag (default 0.05): the false-alarm rate on garments")
    od.add_argument("--json", action="store_true", help="print the rates as JSON")
    od.set_defaults(func=cmd_ood)

    lb = sub.add_parser("labels", help="rank the images of every part (train included) whose given label the models "
                        "doubt (cleanlab on out-of-sample probabilities): a CSV and a gallery")
    lb.add_argument("run_dir")
    add_common(lb)
    lb.add_argument("--csv", default="label-issues.csv", metavar="OUT.csv",
                    help="the table (default ./label-issues.csv): part, index, origin (the file), given, suggested, "
                    "suggested_probability, quality; the gallery beside it as OUT.png")
    lb.add_argument("--folds", type=positive_int, default=3,
                    help="cross-validation folds for the training images (default 3): each member is trained again "
                    "on the other folds, about folds - 1 times the run's training in all")
    lb.add_argument("--time-limit", default=None, metavar="DURATION",
                    help="plan the folds' training to end within this (10m, 1h); default: the run's own epochs")
    lb.add_argument("--quiet", action="store_true", help="no progress lines")
    lb.set_defaults(func=cmd_labels)

    pr = sub.add_parser("predict", help="classify image files (any size, colour or common format) with a trained run "
                        "(or the shipped model)")
    pr.add_argument("inputs", nargs="+", metavar="[RUN_DIR] FILE_OR_FOLDER",
                    help="a run folder first (else the shipped model), then image files or folders searched for them")
    pr.add_argument("--top-k", type=positive_int, default=None,
                    help="classes to list per image (default 3; with --json all 10)")
    pr.add_argument("--json", action="store_true", help='one JSON object per line: {"file", "label", "ood", '
                    '"ood_score", "probabilities", "members"}, or {"file", "error"}')
    pr.add_argument("--csv", default=None, metavar="OUT.csv",
                    help="write a table instead of printing: file, label, the top-k classes and probabilities "
                    "(default 3), ood, ood_score, and the reason for a file that could not be read; rows are "
                    "written as they come, so an interrupted run leaves the ones done")
    pr.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="default: cpu")
    pr.add_argument("--engine", choices=ENGINES, default="auto", help=ENGINE_HELP)
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="write the ensemble (and each member) as ONNX")
    ex.add_argument("run_dir", nargs="?", default=None, help="a run folder (default: the shipped model)")
    ex.add_argument("--onnx", default=None, metavar="OUT",
                    help="the ensemble's file (default RUN_DIR/model.onnx, or ./model.onnx for the shipped model); "
                         "members go beside it as model.<member>.onnx")
    ex.set_defaults(func=cmd_export)

    sv = sub.add_parser("serve", help="the HTTP service and web page for a trained run (FastAPI on uvicorn)")
    sv.add_argument("run_dir", nargs="?", default=None, help="a run folder (default: the shipped model)")
    sv.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only); 0.0.0.0 for all")
    sv.add_argument("--port", type=port, default=8000, help="default 8000 (0: any free port)")
    sv.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                    help="a Host header name to answer besides localhost and --host (repeatable; '*': any, e.g. "
                         "behind a proxy that checks it)")
    sv.add_argument("--max-body-mb", type=positive_float, default=10.0,
                    help="largest request body in MiB (default 10)")
    sv.add_argument("--max-megapixels", type=positive_float, default=40.0,
                    help="largest image, checked before decoding (default 40)")
    sv.add_argument("--data-dir", default=None, help="test images for the page's random button")
    sv.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="default: cpu")
    sv.add_argument("--engine", choices=ENGINES, default="auto", help=ENGINE_HELP)
    sv.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    sv.set_defaults(func=cmd_serve)

    lt = sub.add_parser("loadtest", help="a bounded load test of the service: requests/s, latency p50/p99, errors")
    lt.add_argument("run_dir", nargs="?", help="start `serve RUN_DIR` on a free port for the test (or give --url)")
    lt.add_argument("--url", default=None, help="test a service that is already running, e.g. http://127.0.0.1:8000")
    lt.add_argument("--requests", type=positive_int, default=2000, help="default 2000")
    lt.add_argument("--concurrency", type=positive_int, default=16, help="requests in flight (default 16)")
    lt.add_argument("--photos", action="store_true", help="send 224×224 JPEG photos instead of 28×28 PNGs")
    lt.add_argument("--data-dir", default=None, help="the test images to send")
    lt.add_argument("--data", default=None, metavar="SOURCE", dest="data_source",
                    help="with --url: the data set whose test images to send (default fashion-mnist; a run folder "
                         "sends its own)")
    lt.add_argument("--json", action="store_true", help="print the result as JSON")
    lt.set_defaults(func=cmd_loadtest)

    bn = sub.add_parser("bench", help="training and inference speed on this machine, against the usual way")
    bn.add_argument("run_dir", nargs="?", help="a trained run: its members for inference, its history for "
                    "time-to-accuracy (default: untrained default-profile members, no time-to-accuracy)")
    bn.add_argument("--json", action="store_true", help="print one JSON object")
    bn.add_argument("--tiny", action="store_true", help="a few batches of each part, to check that it works")
    bn.add_argument("--data-dir", default=None, help="the training images to time")
    bn.set_defaults(func=cmd_bench)

    data = sub.add_parser("data", help="data set tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="verify a data set (default Fashion-MNIST's four IDX files) and print "
                                "the splits' facts")
    check.add_argument("--data-dir", default=None, help="folder of Fashion-MNIST's four .gz IDX files")
    add_data_options(check)
    check.set_defaults(func=cmd_data_check)
    return parser


def add_data_options(p: argparse.ArgumentParser) -> None:
    """Which data set, and the models' input geometry (each a `data.*` field of the config)."""
    p.add_argument("--data", default=None, metavar="SOURCE", dest="data_source",
                   help="fashion-mnist (the default); the folder of another IDX data set in the same four-file "
                        "layout (class names from its classes.txt); or an image folder, one sub-folder per class "
                        "(optionally under train/, val/, test/)")
    p.add_argument("--image-size", type=positive_int, default=None, metavar="N",
                   help="image folders: the models' input is N×N pixels (default 28, the paper's)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="image folders: 1 greyscale (default, the paper's) or 3 RGB")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="image folders: leave out files that cannot be decoded (else the run is refused)")


def add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=config.PRECISIONS, default=None,
                   help="training's arithmetic for every member: auto (the profile's default): bf16 on CUDA and on "
                        "CPUs with native bf16 (AVX-512 BF16, AMX), else fp32; or fp32 / bf16 forced")
    p.add_argument("--balanced", action="store_true",
                   help="weight each class's loss by the inverse of its share of the training images, for every "
                        "member (train.class_weights=balanced): for classes of very unequal size")
    add_no_flips(p)


def add_no_flips(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-flips", action="store_true",
                   help="no mirror images (flip augmentation, flip TTA) for any member: for classes that a mirror "
                        "changes, such as digits or letters")


def data_overrides(args) -> list[str]:
    """The data options given, as `--set` overrides (they win over a profile or --config, as --set does)."""
    given = {"skip_bad_images": "true" if args.skip_bad_images else None, "image_size": args.image_size,
             "channels": args.channels}
    return [f"data.{k}={v}" for k, v in given.items() if v is not None]


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder of the four .gz IDX files "
                   "(default $FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when available")


def cmd_run(args) -> int:
    from fashion_ensemble.model.runs import RunFolder
    from fashion_ensemble.study import pipeline, seeds
    from fashion_ensemble.training import distributed

    options = dict(data_dir=args.data_dir, device=distributed.start(args.device), progress=not args.quiet,
                   tensorboard=args.tensorboard, parallel=args.parallel)
    if args.resume:
        options_given = {"--profile": args.profile, "--config": args.config, "--protocol": args.protocol,
                         "--seed": args.seed, "--seeds": args.seeds, "--out": args.out, "--data": args.data_source,
                         "--set": args.overrides or None, "--restart": args.restart or None,
                         "--skip-bad-images": args.skip_bad_images or None, "--image-size": args.image_size,
                         "--channels": args.channels, "--no-flips": args.no_flips or None,
                         "--precision": args.precision, "--time-limit": args.time_limit,
                         "--balanced": args.balanced or None, "--init-from": args.init_from}
        given = [name for name, value in options_given.items() if value is not None]
        if given:
            raise UserError(f"--resume continues a run with its own config.json; drop {' '.join(given)}")
        out = pipeline.resume_study(args.resume, **options)
    else:
        out = seeds.run(run_config(args), args.out, seeds=args.seeds or 1, restart=args.restart, **options)
    if not distributed.is_main():  # under torchrun, only rank 0 speaks
        return 0
    if args.seeds and args.seeds > 1:
        summary = seeds.read_summary(out)
        print(format_table({n: {k: v["mean"] for k, v in m.items()} for n, m in summary["models"].items()}))
        print(f"mean over {args.seeds} seeds; study folder: {out}  (summary: {out / seeds.SUMMARY_MD})")
    else:
        folder = RunFolder(out)
        print(format_table(folder.metrics()["models"]))
        print(f"run folder: {out}  (report: {folder.report})")
    return 0


def cmd_ablate(args) -> int:
    from fashion_ensemble.study import ablation

    levers = None if args.levers is None else [x.strip() for x in args.levers.split(",") if x.strip()]
    out = ablation.run_ablation(run_config(args), args.out, levers, data_dir=args.data_dir, device=args.device,
                                progress=not args.quiet)
    print((out / ablation.TABLE).read_text(), end="")
    print(f"ablation folder: {out}")
    return 0


def run_config(args) -> config.RunConfig:
    overrides = [*data_overrides(args), *args.overrides]
    cfg = config.resolve(profile_name=args.profile, config_file=args.config, protocol=args.protocol, seed=args.seed,
                         data_source=args.data_source, overrides=overrides, default_profile=args.profile_default)
    cfg = config.with_precision(cfg, args.precision) if args.precision else cfg
    if args.balanced:
        cfg = config.map_members(cfg, lambda m: config.with_train(m, class_weights="balanced"))
    if getattr(args, "init_from", None) is not None:
        from fashion_ensemble.study import warmstart

        cfg = warmstart.init_from(cfg, args.init_from)
    limit = getattr(args, "time_limit", None)
    cfg = config.with_time_limit(cfg, config.parse_duration(limit)) if limit is not None else cfg
    return config.without_flips(cfg) if args.no_flips else cfg


def cmd_evaluate(args) -> int:
    from fashion_ensemble.study import pipeline

    if sys.stderr.isatty():  # a person waiting; logs and pipes get the result (or one line of error) alone
        print(f"evaluating {args.run_dir} on its test split{' as photos' if args.photos else ''}: each member, the "
              "vote, bootstrap intervals (a minute or two on 2 cores)", file=sys.stderr, flush=True)
    results = pipeline.evaluate(args.run_dir, data_dir=args.data_dir, device=args.device, photos=args.photos)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    return 0


def cmd_revote(args) -> int:
    from fashion_ensemble.model.runs import RunFolder
    from fashion_ensemble.study import seeds

    if sys.stderr.isatty():  # a person waiting; logs and pipes get the result alone
        print(f"revoting {args.run_dir}: every member on its validation and test splits, the new vote, its report "
              "(about a minute a run on 2 cores)", file=sys.stderr, flush=True)
    revoted = seeds.revote(args.run_dir, weighting=args.weighting, calibrate=args.calibrate, tta_shift=args.tta_shift,
                           data_dir=args.data_dir, device=args.device)
    results = {}
    for run_dir in revoted:
        m = RunFolder(run_dir).metrics()
        results[str(run_dir)] = {"weighting": m["weighting"], "weights": m["weights"],
                                 "ensemble": m["models"]["ensemble"]["accuracy"], "significance": m["significance"]}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for run_dir, r in results.items():
        weights = " / ".join(f"{name} {w:.2f}" for name, w in r["weights"].items())
        tests = "; ".join(f"vs {key.removeprefix('ensemble_vs_')} {t['a_right_b_wrong']} won, {t['a_wrong_b_right']} "
                          f"lost, p = {t['p_value']:.2g}" for key, t in r["significance"].items())
        print(f"{run_dir}: {r['weighting']} weights {weights}; ensemble test accuracy {r['ensemble']:.4f} ({tests})")
    return 0


def cmd_ood(args) -> int:
    from fashion_ensemble.model import ood
    from fashion_ensemble.study import pipeline

    rates = pipeline.add_ood(args.run_dir, data_dir=args.data_dir, device=args.device,
                             flag_rate=args.flag_rate or ood.FLAG_RATE)
    if args.json:
        print(json.dumps(rates, indent=2))
    else:
        def share(key):  # None: no image of that kind (e.g. no wrong prediction)
            return "n/a" if rates[key] is None else f"{rates[key]:.1%}"

        print(f"{Path(args.run_dir) / ood.FILE}: flags {rates['flag_rate']:.0%} of validation images; on the test "
              f"images {share('flagged')} (of the correct predictions {share('correct_flagged')}, of the wrong ones "
              f"{share('wrong_flagged')}); accuracy {share('accuracy_kept')} on those kept")
    return 0


def cmd_labels(args) -> int:
    from fashion_ensemble.study import labels
    from fashion_ensemble.text import terminal
    from fashion_ensemble.training import distributed

    limit = None if args.time_limit is None else config.parse_duration(args.time_limit)
    rows, gallery = labels.check_labels(args.run_dir, args.csv, folds=args.folds, time_limit_s=limit,
                                        data_dir=args.data_dir, device=distributed.resolve_device(args.device),
                                        progress=not args.quiet)
    parts = ", ".join(f"{part} {sum(r['part'] == part for r in rows):,}" for part in labels.PARTS)
    print(terminal(f"{len(rows):,} suspected label errors ({parts}) in {args.csv}"
                   + (f"; the most doubtful {min(len(rows), labels.GALLERY)} in {gallery}" if rows else "")))
    for r in rows[:5]:
        print(terminal(f"  {r['origin']}: labelled {r['given']}, looks like {r['suggested']} "
                       f"({r['suggested_probability']:.0%})"))
    return 0


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535, got {text!r}")
    return int(text)


def cmd_predict(args) -> int:
    from tqdm import tqdm

    from fashion_ensemble.model import runs
    from fashion_ensemble.serving import predict
    from fashion_ensemble.text import terminal
    from fashion_ensemble.training import distributed

    first = Path(args.inputs[0])
    if not first.exists() and first.suffix.lower() not in predict.IMAGE_SUFFIXES:
        raise UserError(f"{first} does not exist: it is neither a run folder nor an image file or folder")
    run_dir, inputs = (first, args.inputs[1:]) if runs.RunFolder(first).is_complete() else (None, args.inputs)
    if not inputs:
        raise UserError(f"no images to classify: give files or folders after the run folder {run_dir}")
    if args.csv is not None and args.json:
        raise UserError("--csv and --json both asked for: choose one (the table, or JSON lines on stdout)")
    files = predict.find_images(inputs)
    ensemble = runs.load(run_dir, device=distributed.resolve_device(args.device), engine=args.engine)
    top_k = args.top_k or (None if args.json else 3)
    table = None
    if args.csv is not None:
        top_k = min(top_k, len(ensemble.classes))
        file, table = open_table(args.csv, top_k)
    failed = done = 0
    try:
        with tqdm(total=len(files), unit="img", disable=True if args.quiet or len(files) < 2 else None,
                  leave=False) as bar:
            for rec in predict.predict_files(ensemble, files, top_k=top_k):
                bar.update()
                done += 1
                if "error" in rec:
                    failed += 1
                    tqdm.write(terminal(f"fashion-ensemble: skipped {rec['error']}"), file=sys.stderr)
                if table is not None:
                    table.writerow(predict.csv_row(rec, top_k))
                    file.flush()  # whole rows on disk as they come: an interrupted run leaves a readable table
                elif args.json:
                    tqdm.write(json.dumps(rec, allow_nan=False), file=sys.stdout)
                elif "error" not in rec:
                    tqdm.write(terminal(format_prediction(rec)), file=sys.stdout)
    except KeyboardInterrupt as e:
        if table is not None:
            e.add_note(terminal(f"the first {done:,} of {len(files):,} files are in {args.csv}"))
        raise
    finally:
        if table is not None:
            file.close()
    if table is not None:
        unread = f" ({failed:,} file{'s' * (failed != 1)} could not be read: their rows say why)" if failed else ""
        print(terminal(f"wrote {done - failed:,} predictions to {args.csv}{unread}"))
    if failed:
        print(f"fashion-ensemble: {failed} of {len(files)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


def open_table(path: str, top_k: int):
    """`predict --csv`'s file and csv writer, its header written; refused in one line when the path cannot be
    written."""
    import csv

    from fashion_ensemble.serving.predict import csv_header

    try:
        file = open(path, "w", newline="", encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write the table {path}: {e.strerror}; give a path in a folder you can write to"
                        ) from None
    writer = csv.writer(file)
    writer.writerow(csv_header(top_k))
    return file, writer


def format_prediction(rec: dict) -> str:
    """shoe.jpg: Sneaker 97.1% | Sandal 2.0% | Ankle boot 0.5%   [ann: Sneaker 91.0%; cnn: Sneaker 99.2%]
    noise.png: unlike the training images (ood score 1.000), a guess: Bag 97.4% | ...   [...]"""
    top = " | ".join(f"{c} {p:.1%}" for c, p in rec["probabilities"].items())
    members = "; ".join(f"{name}: {next(iter(p))} {next(iter(p.values())):.1%}" for name, p in rec["members"].items())
    doubt = f"unlike the training images (ood score {rec['ood_score']:.3f}), a guess: " if rec.get("ood") else ""
    return f"{rec['file']}: {doubt}{top}   [{members}]"


def cmd_export(args) -> int:
    from fashion_ensemble.model import runs
    from fashion_ensemble.serving import export

    default = Path("model.onnx") if args.run_dir is None else Path(args.run_dir) / "model.onnx"
    for path in export.export_onnx(runs.load(args.run_dir), default if args.onnx is None else args.onnx):
        print(path)
    return 0


def cmd_serve(args) -> int:
    from fashion_ensemble.serving import serve
    from fashion_ensemble.training import distributed

    def test_images():  # for the page's random button; read on its first use, so serving never imports data.py
        from fashion_ensemble.data import split as data
        from fashion_ensemble.model.runs import RunFolder, run_or_pretrained

        return data.part(RunFolder(run_or_pretrained(args.run_dir)).config().data, "test", args.data_dir,
                         progress=False)

    settings = serve.ServeConfig(host=args.host, port=args.port, max_body_bytes=int(args.max_body_mb * 2**20),
                                 max_pixels=int(args.max_megapixels * 1e6), engine=args.engine,
                                 allowed_hosts=tuple(args.allowed_host))
    serve.serve(args.run_dir, settings, device=str(distributed.resolve_device(args.device)),
                access_log=args.access_log, examples=test_images)
    return 0


def cmd_loadtest(args) -> int:
    from fashion_ensemble.data import split as data
    from fashion_ensemble.model.runs import RunFolder
    from fashion_ensemble.tools import loadtest

    if bool(args.run_dir) == bool(args.url):
        raise UserError("give a run folder (a service is started for the test) or --url of a running one, not both")
    kwargs = dict(requests=args.requests, concurrency=args.concurrency, photos=args.photos)

    def test(url):  # the run's own test images (or, for --url, --data's in the service's input shape)
        service = loadtest.health(url)
        if args.run_dir:
            cfg = RunFolder(args.run_dir).config().data
        else:
            channels, size, _ = service.get("input_shape", (1, 28, 28))
            cfg = config.DataConfig(source=args.data_source or config.FASHION_MNIST, image_size=size,
                                    channels=channels)
        images, labels = data.part(cfg, "test", args.data_dir, progress=False)
        return loadtest.load_test(url, images, labels, classes=service["classes"], **kwargs)

    if args.url:
        result = test(args.url)
    else:
        with loadtest.service(args.run_dir) as url:
            result = test(url)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['requests']} requests, {result['concurrency']} at a time, in {result['seconds']} s: "
              f"{result['requests_per_s']} requests/s; latency p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
              f"{result['errors']} errors; accuracy {result['accuracy']}")
        for e in result["first_errors"]:
            print(f"  error: {e}")
    return 1 if result["errors"] else 0


def cmd_bench(args) -> int:
    from fashion_ensemble.data import split as data
    from fashion_ensemble.model.runs import RunFolder
    from fashion_ensemble.tools import bench

    cfg = RunFolder(args.run_dir).config() if args.run_dir else config.profile("default")
    images, labels = data.part(cfg.data, "train", args.data_dir, progress=False)
    result = bench.run_bench(args.run_dir, bench.TINY if args.tiny else bench.BenchConfig(), images, labels)
    print(json.dumps(result) if args.json else bench.format_result(result))
    return 0


def cmd_data_check(args) -> int:
    from fashion_ensemble.data import split as data
    from fashion_ensemble.text import terminal

    cfg = config.DataConfig(source=args.data_source or config.FASHION_MNIST, image_size=args.image_size or 28,
                            channels=args.channels or 1, skip_bad_images=args.skip_bad_images)
    checked = data.describe(args.data_dir, cfg)
    if args.data_source in (None, config.FASHION_MNIST):
        print(f"{checked['source']}: 4 files OK (magic numbers, shapes, counts, SHA-256 of content)")
    else:
        left_out = checked["left_out"]
        skipped = ", ".join(f"{n:,} {what}" for what, n in (("undecodable files", left_out.get("skipped_bad_images")),
                                                           ("hidden files", left_out.get("skipped_hidden"))) if n)
        print(f"{checked['source']}: OK{f' (left out: {skipped})' if skipped else ''}, {len(checked['classes'])} "
              f"classes: {', '.join(checked['classes'][:12])}{' ...' if len(checked['classes']) > 12 else ''}")
    for protocol, facts in checked["protocols"].items():
        sizes = ", ".join(f"{k} {v:,}" for k, v in facts["sizes"].items())
        dups = ", ".join(f"{k} {v:,}" for k, v in facts["cross_split_duplicates"].items())
        near = ", ".join(f"{k} {v:,}" for k, v in facts["near_duplicates"].items())
        print(f"protocol {protocol}: {sizes}; images with an exact copy in an earlier part: {dups}; with a near "
              f"copy (re-encoded, re-saved): {near}")
    if checked["rare_classes"]:
        rare = ", ".join(f"{c} ({n:,})" for c, n in checked["rare_classes"].items())
        print(terminal(f"warning: rare classes, under a tenth of the largest class's images: {rare}; the models will "
                       "seldom predict them: add images, or train with --balanced"), file=sys.stderr)
    return 0


def format_table(models: dict) -> str:
    rows = [f"{'model':<10} {'accuracy':>9} {'macro P':>8} {'macro R':>8} {'macro F1':>9}"]
    for name, m in models.items():
        rows.append(f"{name:<10} {m['accuracy']:>9.4f} {m['macro_precision']:>8.4f} {m['macro_recall']:>8.4f} "
                    f"{m['macro_f1']:>9.4f}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
