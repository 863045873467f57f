"""Markdown rows for docs/budgets.md, one per run folder: its budget, the plan, the time it used, test accuracies
and the vote against its CNN (McNemar), and the CPU it ran on — read from the folders, not typed.

    python scripts/budget_table.py runs/fm-quick runs/fm-5m runs/fm-default/seed0
"""

from __future__ import annotations

import sys

from fashion_ensemble.model.runs import RunFolder


def row(path: str) -> str:
    folder = RunFolder(path)
    cfg, metrics, history = folder.config(), folder.metrics(), folder.history()
    models = metrics["models"]
    budget = cfg.budget
    limit = f"{budget.time_limit_s / 60:g} min" if budget else "none"
    plan = " / ".join(f"{m.train.epochs}" for m in cfg.members.values())
    if budget and budget.plan and any(p.recipe == "small data" for p in budget.plan.values()):
        plan += " (small data)"
    used = history["timing"]["total_s"] / 60
    sig = metrics["significance"].get("ensemble_vs_cnn")
    vote = f"{sig['a_right_b_wrong']} / {sig['a_wrong_b_right']}, p = {sig['p_value']:.2g}" if sig else ""
    env = history.get("environment", {})
    cpu = f"{env.get('cpu', '?')}{', native bf16' if env.get('cpu_native_bf16') else ', no native bf16'}"
    acc = " | ".join(f"{models[n]['accuracy']:.4f}" for n in (*cfg.members, "ensemble"))
    return f"| {limit} | `{path}` | {plan} | {used:.1f} min | {acc} | {vote} | {cpu} |"


if __name__ == "__main__":
    print("| budget | run folder | epochs planned | used | " + " | ".join(["member"] * 2) + " | ensemble | vote vs CNN "
          "(won / lost, p) | CPU |")
    for p in sys.argv[1:]:
        print(row(p))
