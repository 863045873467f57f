"""report.md and its PNG plots, from a run's metrics and history. Reads values; computes nothing new."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)
import numpy as np  # noqa: E402

from fashion_ensemble.config.classes import CLASSES  # noqa: E402
from fashion_ensemble.model.probabilities import tta_views  # noqa: E402
from fashion_ensemble.text import markdown, plain  # noqa: E402

# The paper's Table (its reported single runs, paper protocol), for comparison only.
PAPER_RESULTS = {
    "ann": {"accuracy": 0.8376, "macro_precision": 0.839, "macro_recall": 0.838, "macro_f1": 0.833},
    "cnn": {"accuracy": 0.8417, "macro_precision": 0.845, "macro_recall": 0.842, "macro_f1": 0.840},
    "ensemble": {"accuracy": 0.8566, "macro_precision": 0.858, "macro_recall": 0.857, "macro_f1": 0.853},
}
HEADLINE = ("accuracy", "macro_precision", "macro_recall", "macro_f1")


def paper_row(name: str, classes: list[str]) -> dict | None:
    """The paper's reported scores for `name`, when the run is on Fashion-MNIST (its data set, by its classes)."""
    return PAPER_RESULTS.get(name) if list(classes) == list(CLASSES) else None


def write_report(path: Path, cfg, metrics: dict, history: dict, timing: dict | None = None,
                 environment: dict | None = None, gallery: np.ndarray | None = None) -> None:
    """The report at `path` (a run folder's report.md), its plots beside it; `gallery`: the pixels of
    metrics["top_errors"]' images, in their order. A plot or section that fails is named in the report instead of
    failing the run: by then the members are trained, and the run folder must still be completed."""
    plots = {
        "training_curves.png": lambda: plot_training_curves(history),
        "confusion_matrices.png": lambda: plot_confusion_matrices(metrics),
        "per_class_f1.png": lambda: plot_per_class_f1(metrics),
        "reliability.png": lambda: plot_reliability(metrics),
    }
    if gallery is not None and len(gallery):
        plots["misclassified.png"] = lambda: plot_misclassified(metrics["top_errors"], gallery)
    drawn, failed = [], {}
    with plt.rc_context({"text.parse_math": False}):  # labels are plain text: a class named "$x^$" is no formula
        for name, draw in plots.items():
            try:
                fig = draw()
                try:
                    fig.savefig(path.parent / name, dpi=110, bbox_inches="tight")
                finally:
                    plt.close(fig)
                drawn.append(name)
            except Exception as e:  # noqa: BLE001 - any plotting failure: reported, never fatal
                failed[name] = f"{type(e).__name__}: {e}"
    try:
        text = render_markdown(cfg, metrics, history, drawn, timing or {}, environment, failed)
    except Exception as e:  # noqa: BLE001 - the tables failed: say so, keep the run
        text = (f"# fashion-ensemble run, seed {metrics.get('seed')}\n\nThe report could not be written "
                f"({markdown(f'{type(e).__name__}: {e}')}); the scores are in metrics.json.\n")
    path.write_text(text)


def write_summary(path: Path, summary: dict) -> None:
    """summary.md of a multi-seed study: mean ± std (sample) over the seeds, and each seed's accuracy."""
    n = len(summary["seeds"])
    lines = [
        f"# fashion-ensemble: {n} seeds, profile `{summary['profile']}`, protocol `{summary['protocol']}`",
        "",
        f"Test-split scores, mean ± std over seeds {', '.join(map(str, summary['seeds']))} (each a full run: "
        f"{', '.join(summary['runs'])}). The paper's numbers are its single reported run.",
        "",
        "| model | source | accuracy | macro precision | macro recall | macro F1 | ECE | ECE after scaling |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary["models"].items():
        paper = paper_row(name, summary.get("classes", CLASSES))
        if paper:
            lines.append(f"| {name} | paper | " + " | ".join(f"{paper[k]:.4f}" for k in HEADLINE) + " | | |")
        cells = [f"**{m[k]['mean']:.4f}** ± {m[k]['std']:.4f}" for k in HEADLINE]
        cells += [f"{m[k]['mean']:.4f} ± {m[k]['std']:.4f}" for k in ("ece", "ece_scaled")]
        lines.append(f"| {name} | **ours** | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | " + " | ".join(f"seed {s}" for s in summary["seeds"]) + " |",
        "|---|" + "---|" * n,
        *(f"| {name} | " + " | ".join(f"{v:.4f}" for v in m["accuracy"]["values"]) + " |"
          for name, m in summary["models"].items()),
        "",
        "McNemar's exact test of the ensemble against each member, p-value per seed: "
        + "; ".join(f"{k.replace('_', ' ')}: " + ", ".join(f"{p:.3g}" for p in s["p_values"])
                    for k, s in summary["significance"].items()) + ".",
        "",
        *(seeds_verdict(k.removeprefix("ensemble_vs_"), s) for k, s in summary["significance"].items()),
        "",
    ]
    if all(s is not None for s in summary.get("run_seconds", [None])):
        lines += ["Wall time per run (training, scoring, report): "
                  + ", ".join(f"{s / 60:.1f} min" for s in summary["run_seconds"]) + ".", ""]
    path.write_text("\n".join(lines))


ALPHA = 0.05  # the significance level the verdicts use


def verdict(member: str, s: dict) -> str:
    """One run's McNemar result in words: did the ensemble beat `member`, and how sure is that."""
    won, lost, p = s["a_right_b_wrong"], s["a_wrong_b_right"], s["p_value"]
    counts = f"right on {won} test images where {member} was wrong, wrong on {lost} where it was right"
    if won > lost and p < ALPHA:
        return f"- **The ensemble beat {member}**: {counts}; p = {p:.2g} < {ALPHA}, so chance alone is unlikely."
    if won > lost:
        return (f"- The ensemble was ahead of {member} but **not significantly**: {counts}; p = {p:.2g} ≥ {ALPHA}, "
                "so this run does not show that it is better.")
    if won == lost:
        return f"- **The ensemble did not beat {member}**: a tie ({counts})."
    return (f"- **The ensemble did not beat {member}: it was worse** ({counts}; p = {p:.2g}"
            f"{', significant' if p < ALPHA else ''}).")


def seeds_verdict(member: str, s: dict) -> str:
    """Over seeds, in words: in how many the ensemble beat `member` at p < ALPHA, and in how many it was behind."""
    p_values, n = s["p_values"], len(s["p_values"])
    ahead = s.get("ahead", [1] * n)  # summaries written before "ahead" was recorded: the p-values alone
    beat = sum(a > 0 and p < ALPHA for a, p in zip(ahead, p_values))
    behind = sum(a < 0 for a in ahead)
    if beat == n:
        return f"- The ensemble beat {member} with p < {ALPHA} in every seed."
    return (f"- The ensemble beat {member} with p < {ALPHA} in {beat} of {n} seeds, **not in the other {n - beat}** "
            f"(behind it in {behind}).")


WEIGHTING_WORDS = {"equal": "the plain average", "tuned": "tuned on validation accuracy",
                   "log_loss": "fit on validation log-loss"}  # config.WEIGHTINGS in words


def _weighting(alt: dict, used: str | None = None) -> str:
    """Equal against tuned weights, in one sentence (one clause when tuning kept them equal), then the weights fit
    on validation log-loss where the run folder has them (runs made before that rule existed do not) and the run
    did not vote with them (`used`: its weighting, which the report's sentence before names)."""
    tuned = alt["tuned_weights"]
    if np.allclose(list(tuned.values()), 1 / len(tuned)):
        text = (f"Tuned on validation accuracy, the weights stayed equal: accuracy "
                f"{alt['ensemble_equal_weights']['accuracy']:.4f}.")
    else:
        text = (f"Equal weights give accuracy {alt['ensemble_equal_weights']['accuracy']:.4f}; weights tuned on "
                f"validation accuracy ({', '.join(f'{n} {w:.2f}' for n, w in tuned.items())}) give "
                f"{alt['ensemble_tuned_weights']['accuracy']:.4f}.")
    if "log_loss_weights" in alt and used != "log_loss":
        by_log_loss = ", ".join(f"{n} {w:.2f}" for n, w in alt["log_loss_weights"].items())
        text += (f" Weights fit on validation log-loss ({by_log_loss}) give "
                 f"{alt['ensemble_log_loss_weights']['accuracy']:.4f}.")
    return text


def _calibrated_voting(metrics: dict) -> str:
    alt, temps = metrics["alternatives"], metrics.get("temperatures", {})
    if "uncalibrated_ensemble_tuned_weights" not in alt:
        return ""
    return (" The members vote with temperature-scaled probabilities ("
            + ", ".join(f"{n} T = {t:.3f}" for n, t in temps.items()) + ", fit on validation); without the "
            f"temperatures: equal weights {alt['uncalibrated_ensemble_equal_weights']['accuracy']:.4f}, tuned "
            f"({', '.join(f'{n} {w:.2f}' for n, w in alt['uncalibrated_tuned_weights'].items())}) "
            f"{alt['uncalibrated_ensemble_tuned_weights']['accuracy']:.4f}.")


def test_time_views(cfg) -> str:
    """One sentence on what each member's probabilities are averaged over (its TTA), or "" when no member has TTA."""
    def views(name, m) -> str:
        if m.tta_shift:
            pixels = f"{m.tta_shift} pixel{'s' if m.tta_shift > 1 else ''}"
            mirror = ", each with its mirror" if m.tta_flip else ""
            return (f"{name} {tta_views(m.tta_flip, m.tta_shift)} views (the image and it moved {pixels} each "
                    f"way{mirror})")
        return f"{name} 2 views (the image and its mirror)" if m.tta_flip else f"{name} none"

    if not any(m.tta_flip or m.tta_shift for m in cfg.members.values()):
        return ""
    return (" Test-time augmentation, each member's probabilities averaged over views of the image: "
            + "; ".join(views(name, m) for name, m in cfg.members.items()) + ".")


def render_markdown(cfg, metrics: dict, history: dict, plots: list[str], timing: dict | None = None,
                    environment: dict | None = None, failed_plots: dict | None = None) -> str:
    """report.md's text. Class and member names are the user's (folder names): each is escaped (text.markdown)."""
    models = metrics["models"]
    md = markdown
    split = metrics["split"]
    lines = [
        f"# fashion-ensemble run: profile `{cfg.profile}`, protocol `{metrics['protocol']}`, seed {metrics['seed']}",
        "",
        "Test-split scores (fractions)."
        + (" The paper's numbers are its single reported run on its own 80/10/10 split."
           if paper_row("ensemble", metrics["classes"]) else ""),
        "",
        "| model | source | accuracy | macro precision | macro recall | macro F1 | accuracy 95% CI | ECE | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        paper = paper_row(name, metrics["classes"])
        if paper:
            lines.append(f"| {md(name)} | paper | " + " | ".join(f"{paper[k]:.4f}" for k in HEADLINE) + " | | | |")
        ours = " | ".join(f"**{m[k]:.4f}**" for k in HEADLINE)
        lo, hi = m["accuracy_ci95"]
        lines.append(f"| {md(name)} | **ours** | {ours} | {lo:.4f}–{hi:.4f} | {m['ece']:.4f} | {m['errors']} |")
    alt = metrics["alternatives"]
    weights = ", ".join(f"{md(n)} {w:.2f}" for n, w in metrics["weights"].items())
    lines += [
        "",
        f"Ensemble weighting: **{metrics['weighting']}** ({weights}"
        + (f": {WEIGHTING_WORDS[metrics['weighting']]}). " if metrics["weighting"] in WEIGHTING_WORDS else "). ")
        + _weighting(alt, metrics["weighting"])
        + _calibrated_voting(metrics)
        + test_time_views(cfg),
        "",
        "Validation accuracy: " + ", ".join(f"{md(n)} {a:.4f}" for n, a in metrics["val_accuracy"].items()) + ".",
        *([] if "balanced_accuracy" not in models["ensemble"] else [
            "",
            "Balanced accuracy (the mean of per-class recall, which weighs a rare class as much as a common one): "
            + ", ".join(f"{n} {m['balanced_accuracy']:.4f}" for n, m in models.items()) + "."]),
        "",
        "CI: percentile bootstrap over the test images. ECE: expected calibration error, 15 bins.",
        "",
        "## Is the ensemble better than each member? (McNemar's exact test, test split)",
        "",
        "| comparison | both right | only ensemble right | only member right | both wrong | p-value |",
        "|---|---|---|---|---|---|",
        *(f"| {k.replace('_', ' ')} | {s['both_right']} | {s['a_right_b_wrong']} | {s['a_wrong_b_right']} | "
          f"{s['both_wrong']} | {s['p_value']:.3g} |" for k, s in metrics["significance"].items()),
        "",
        *(verdict(k.removeprefix("ensemble_vs_"), s) for k, s in metrics["significance"].items()),
        "",
        "## Calibration (temperature fit on validation, scored on test)",
        "",
        "Each member from its raw outputs" + (" (after scaling: the probabilities it votes with)"
                                              if "uncalibrated_ensemble_tuned_weights" in alt else "")
        + "; the ensemble as it votes.",
        "",
        "| model | temperature | ECE | ECE after scaling | log-loss | log-loss after scaling |",
        "|---|---|---|---|---|---|",
        *(f"| {n} | {c['temperature']:.3f} | {c['ece']:.4f} | {c['ece_scaled']:.4f} | {c['log_loss']:.4f} | "
          f"{c['log_loss_scaled']:.4f} |" for n, c in metrics["calibration"].items()),
        "",
        "A temperature above 1 means the model was over-confident, below 1 under-confident (label smoothing makes "
        "models under-confident). Scaling changes no prediction, only the probabilities; the reliability diagrams "
        "are in reliability.png.",
        "",
        "## Per-class F1",
        "",
        "| class | " + " | ".join(map(md, models)) + " |",
        "|---|" + "---|" * len(models),
    ]
    for c in metrics["classes"]:
        lines.append(f"| {md(c)} | " + " | ".join(f"{m['per_class'][c]['f1']:.3f}" for m in models.values()) + " |")
    ens = models["ensemble"]
    lines += [
        "",
        "## Most confused pairs (ensemble)",
        "",
        "| pair | a→b | b→a | total |",
        "|---|---|---|---|",
        *(f"| {md(p['pair'][0])} / {md(p['pair'][1])} | {p['a_as_b']} | {p['b_as_a']} | {p['total']} |"
          for p in ens["most_confused"]),
        "",
    ]
    lines += mistake_lines(metrics, cfg.data.source)
    sim = ens.get("similar_class_confusions")  # Fashion-MNIST's upper-body garments
    if sim:
        lines += [
            f"Among the similar classes ({', '.join(map(md, sim['classes']))}) the ensemble makes {sim['errors']} "
            f"errors, {sim['share_of_all_errors']:.0%} of all its errors. Rows true, columns predicted:",
            "",
            "| true \\ predicted | " + " | ".join(map(md, sim["classes"])) + " |",
            "|---|" + "---|" * len(sim["classes"]),
            *(f"| {md(c)} | " + " | ".join(str(v) for v in row) + " |"
              for c, row in zip(sim["classes"], sim["matrix"])),
            "",
        ]
    lines += ood_lines(metrics.get("ood"))
    lines += [
        "## Training",
        "",
        "| member | epochs run | best epoch | best val loss | val accuracy there | train time (s) | precision |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, h in history.items():
        best = h["epochs"][h["best_epoch"] - 1]
        seconds = sum(e["seconds"] for e in h["epochs"])
        precision = " + ".join(dict.fromkeys(e.get("precision", "fp32") for e in h["epochs"]))  # older runs: fp32
        lines.append(f"| {md(name)} | {len(h['epochs'])} | {h['best_epoch']} | {best['val_loss']:.4f} | "
                     f"{best['val_accuracy']:.4f} | {seconds:.0f} | {precision} |")
    lines += budget_lines(cfg, timing or {})
    lines += start_lines(cfg)
    lines += [
        "",
        "## Split",
        "",
        "Sizes: " + ", ".join(f"{k} {v:,}" for k, v in split["sizes"].items()) + ". "
        f"Normalisation from the training part: mean {split['normalisation']['mean']:.4f}, "
        f"std {split['normalisation']['std']:.4f}.",
        "",
        "Exact-duplicate images falling in two parts: "
        + ", ".join(f"{k} {v}" for k, v in split["cross_split_duplicates"].items()) + ".",
        "",
        "| class | " + " | ".join(split["class_counts"]) + " |",
        "|---|" + "---|" * len(split["class_counts"]),
        *(f"| {md(c)} | " + " | ".join(str(counts[i]) for counts in split["class_counts"].values()) + " |"
          for i, c in enumerate(metrics["classes"])),
        "",
        *environment_lines(environment, timing or {}),
        "## Plots",
        "",
        *(f"![{p}]({p})" for p in plots),
        *(f"- {p} could not be drawn ({md(why)}); the numbers above do not depend on it." for p, why in
          (failed_plots or {}).items()),
        "",
    ]
    return "\n".join(lines)


def mistake_lines(metrics: dict, source: str) -> list[str]:
    """The ensemble's most confident test mistakes, each with its file: where to look for a wrong label."""
    errors = metrics.get("top_errors") or []
    if not errors or "origin" not in errors[0]:  # none, or a run from before origins were recorded
        return []
    where = "the IDX files' names and 0-based places" if errors[0]["origin"].endswith("]") else \
        f"paths under {markdown(source)}"
    return [
        "## The most confident mistakes (ensemble, test)",
        "",
        f"Files as {where}; all {len(metrics.get('test_errors', errors)):,} test errors are in metrics.json "
        "(`test_errors`), most confident first. A confident mistake is often a wrong label: look at the image.",
        "",
        "| file | true | predicted | confidence |",
        "|---|---|---|---|",
        *(f"| {markdown(e['origin'])} | {markdown(e['true'])} | {markdown(e['predicted'])} | {e['confidence']:.1%} |"
          for e in errors),
        "",
    ]


def ood_lines(rates: dict | None) -> list[str]:
    """The "I don't know" signal on the test images (absent from runs made before it)."""
    if not rates:
        return []

    def share(key: str, fmt: str = ".1%") -> str:  # None: no image of that kind (e.g. no wrong prediction)
        return "n/a" if rates[key] is None else format(rates[key], fmt)

    return [
        "## \"I don't know\": inputs unlike the training images",
        "",
        f"Every prediction carries `ood` (and `ood_score`): the members' features are far from every class's (ood.py); "
        f"the threshold flags {rates['flag_rate']:.0%} of validation images. On the test images it flagged "
        f"{share('flagged')}: {share('correct_flagged')} of the correct predictions (false alarms) and "
        f"{share('wrong_flagged')} of the wrong ones. Accuracy on the images it kept: {share('accuracy_kept', '.4f')}; "
        f"on those it flagged: {share('accuracy_flagged', '.4f')}.",
        "It is meant for inputs that are not garments at all (noise, digits, other photos: docs/ood.md), not to "
        "catch the model's mistakes among garments.",
        "",
    ]


def start_lines(cfg) -> list[str]:
    """Where the members' weights started: random, or a trained run's (`run --init-from`)."""
    init = getattr(cfg, "init", None)
    if init is None:
        return []
    return ["", f"Started from the trained run {markdown(init.source)} (weights digest `{init.run_id[:16]}`): each "
            "member from its member of the same name, at a warm start's lower rate; a classifier layer of another "
            "shape (other classes) started fresh."]


def budget_lines(cfg, timing: dict) -> list[str]:
    """What the time budget planned, from which measurements, and what the run used of it."""
    budget = getattr(cfg, "budget", None)
    if budget is None or not budget.plan:
        return []
    planned = "; ".join(f"{markdown(n)} {p.epochs} epochs ({p.augment_epochs} augmented, patience {p.patience}) at "
                        f"{p.images_per_s:,.0f} img/s measured in {p.precision}"
                        + (f", stopped by the time limit after epoch {p.stopped_at}" if p.stopped_at else "")
                        for n, p in budget.plan.items())
    recipe = (" with the small-data recipe" if any(p.recipe == "small data" for p in budget.plan.values()) else "")
    used = f"; used {_duration(timing['total_s'])} of {_duration(budget.time_limit_s)}" if "total_s" in timing else ""
    return ["", f"Time budget {_duration(budget.time_limit_s)}{recipe}: planned {planned}{used}."]


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s:02d} s" if minutes else f"{s} s"


def environment_lines(env: dict | None, timing: dict) -> list[str]:
    """The section that says where, with what and how long (runs made before it was recorded have none)."""
    if not env:
        return []
    gpu = f", GPU {env['gpu']}" if env.get("gpu") else ""
    lines = ["## Environment", "",
             f"- Hardware: {env['cpu']} ({env['cpu_threads']} threads; native bf16: "
             f"{'yes' if env['cpu_native_bf16'] else 'no'}){gpu}; trained on `{env['device']}`.",
             f"- Software: Python {env['python']}, PyTorch {env['torch']}, numpy {env['numpy']}, fashion-ensemble "
             f"{env['fashion_ensemble']}" + (f" (commit {env['commit']})" if env.get("commit") else "") + ".",
             f"- Command: `{env['command']}`."]
    if "total_s" in timing:
        members = ", ".join(f"{k.removeprefix('train_').removesuffix('_s')} {v / 60:.1f}" for k, v in timing.items()
                            if k.startswith("train_"))
        lines.append(f"- Wall time: {timing['total_s'] / 60:.1f} min (training, in min: {members}).")
    return [*lines, ""]


def plot_training_curves(history: dict):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, h in history.items():
        ep = [e["epoch"] for e in h["epochs"]]
        line, = axes[0].plot(ep, [e["train_loss"] for e in h["epochs"]], "--", label=f"{name} train")
        axes[0].plot(ep, [e["val_loss"] for e in h["epochs"]], color=line.get_color(), label=f"{name} val")
        axes[1].plot(ep, [e["train_accuracy"] for e in h["epochs"]], "--", color=line.get_color(),
                     label=f"{name} train")
        axes[1].plot(ep, [e["val_accuracy"] for e in h["epochs"]], color=line.get_color(), label=f"{name} val")
        axes[2].plot(ep, [e["lr"] for e in h["epochs"]], color=line.get_color(), label=name)
        aug = [e["epoch"] for e in h["epochs"] if e["augmented"]]
        if aug:
            for ax in axes[:2]:
                ax.axvspan(0.5, max(aug) + 0.5, color="grey", alpha=0.08)
        best = h["epochs"][h["best_epoch"] - 1]  # the weights kept: the lowest validation loss
        axes[0].plot(best["epoch"], best["val_loss"], "*", ms=12, color=line.get_color(),
                     label=f"{name} kept (epoch {best['epoch']})")
        axes[1].plot(best["epoch"], best["val_accuracy"], "*", ms=12, color=line.get_color())
    for ax, title in zip(axes, ("loss (shaded: augmentation on; ★ the epoch kept)", "accuracy",
                                "learning rate (end of epoch)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    return fig


def plot_confusion_matrices(metrics: dict):
    models = metrics["models"]
    classes = metrics["classes"]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 5.5))
    for ax, (name, m) in zip(np.atleast_1d(axes), models.items()):
        cm = np.array(m["confusion_matrix"])
        ax.imshow(np.log1p(cm), cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 3 else "black")
        ax.set_xticks(range(len(classes)), list(map(plain, classes)), rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), list(map(plain, classes)), fontsize=8)
        ax.set_title(f"{name}: accuracy {m['accuracy']:.4f}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    return fig


def plot_per_class_f1(metrics: dict):
    models = metrics["models"]
    classes = metrics["classes"]
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(models)
    for k, (name, m) in enumerate(models.items()):
        ax.bar(np.arange(len(classes)) + k * width, [m["per_class"][c]["f1"] for c in classes], width, label=name)
    ax.set_xticks(np.arange(len(classes)) + width * (len(models) - 1) / 2, list(map(plain, classes)), rotation=30,
                  ha="right")
    ax.set_ylim(0.0, 1.12)  # from 0, so bar heights compare; the headroom keeps the legend off the bars
    ax.set_ylabel("F1 (test)")
    ax.set_title("Per-class F1")
    ax.legend(loc="upper center", ncol=len(models), fontsize=8)
    return fig


def plot_misclassified(errors: list[dict], images: np.ndarray,
                       title: str = "The ensemble's most confident mistakes on test (true → predicted, confidence)"):
    """The ensemble's most confident mistakes on test: each image with its true and predicted class, and its file
    (the end of its name) where the run recorded it."""
    cols = min(8, len(errors))
    rows = -(-len(errors) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, e, image in zip(axes.ravel(), errors, images):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        caption = f"{_short(plain(e['true']))}\n→ {_short(plain(e['predicted']))} {e['confidence']:.0%}"
        if "origin" in e:
            caption += "\n" + _short(_file_name(plain(e["origin"])), 22)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _file_name(origin: str) -> str:
    """A caption's file: a path's last part ("x.png"), an IDX file's part and place ("train-images[42018]")."""
    name = origin.rsplit("/", 1)[-1]
    head, _, place = name.partition("-idx")
    return f"{head}[{place.split('[', 1)[1]}" if "[" in place else name


def _short(text: str, width: int = 18) -> str:
    """`text` cut to `width` characters with an ellipsis: a caption as wide as its image, not its neighbour's."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def plot_reliability(metrics: dict):
    """One panel per model: accuracy against confidence per bin, before and after temperature scaling."""
    cal = metrics["calibration"]
    fig, axes = plt.subplots(1, len(cal), figsize=(4 * len(cal), 4), squeeze=False)
    for ax, (name, c) in zip(axes[0], cal.items()):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
        for key, label in (("reliability", f"as trained (ECE {c['ece']:.3f})"),
                           ("reliability_scaled", f"T = {c['temperature']:.2f} (ECE {c['ece_scaled']:.3f})")):
            r = c[key]
            pts = [(f, a, n) for f, a, n in zip(r["confidence"], r["accuracy"], r["count"]) if n]
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
            if key == "reliability":  # each bin's image count: a bin of a few images is noise, not a failure
                for f, a, n in pts:
                    ax.annotate(str(n), (f, a), textcoords="offset points", xytext=(0, -9), ha="center",
                                fontsize=6, color=line.get_color())
        ax.set(title=f"{name} (numbers: images per bin)", xlabel="confidence", ylabel="accuracy", xlim=(0, 1),
               ylim=(0, 1))
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
