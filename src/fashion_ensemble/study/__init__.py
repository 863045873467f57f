"""The study: train both members, vote, score and report into a run folder (pipeline.py), several seeds and the
one way in, `train` (seeds.py), scores and significance (scoring.py over the pure metrics.py), report.md and its
plots (report.py), and the one-lever-at-a-time ablation (ablation.py over levers.py)."""
