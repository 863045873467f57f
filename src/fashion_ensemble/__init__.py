"""fashion-ensemble: an ANN + depthwise-separable CNN soft-voting ensemble for Fashion-MNIST.

    import fashion_ensemble as fe
    run = fe.train("default")                           # train, score, report → runs/<name>/ (resumes if stopped)
    model = fe.load(run)                                # rebuild from the folder alone
    proba = model.predict_proba(images)                 # (N, 28, 28) uint8 or [0, 1] float → (N, 10)
                                                        # (or the run's own geometry and classes)

The names below are imported on first use, so that `fe.load` and `predict_proba` never import training or the data
set's reader (and `import fashion_ensemble` alone imports no torch).
"""

from __future__ import annotations

import importlib

_API = {  # name → the module that owns it
    "CLASSES": "config.classes",
    "PROFILES": "config", "RunConfig": "config", "profile": "config",
    "DataConfig": "config", "ANNConfig": "config", "CNNConfig": "config",
    "UserError": "errors",
    "load_raw": "data.idx", "make_split": "data.split",
    "Member": "model.ensemble", "SoftVotingEnsemble": "model.ensemble",
    "RunFolder": "model.runs", "load": "model.runs", "pretrained": "model.runs",
    "evaluate": "study.pipeline",
    "train": "study.seeds", "summarize": "study.seeds", "revote": "study.seeds",
    "OnnxEnsemble": "model.engine", "export_onnx": "serving.export",
}
# The four ways to start training before `fe.train`: they still work, for one version, and say what replaces them.
_DEPRECATED = {"run_study": "study.pipeline", "resume_study": "study.pipeline", "run": "study.seeds",
               "run_seeds": "study.seeds"}
__all__ = sorted(_API)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _DEPRECATED:  # not cached: each use warns
        import warnings

        warnings.warn(f"fe.{name} is deprecated and will be removed in the next version: use fe.train (it starts, "
                      "resumes or keeps a run folder, and takes seeds=N; CHANGELOG.md)", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(f".{_DEPRECATED[name]}", __name__), name)
    if name not in _API:
        raise AttributeError(f"module 'fashion_ensemble' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value  # once
    return value


def __dir__():
    return sorted([*globals(), *_API])
