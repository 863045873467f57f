"""The run folder, the one owner of its layout: paths, naming, completeness, reading and writing, and `load`.
Weights in safetensors, everything else JSON; nothing is ever unpickled.

    runs/<name>/config.json             RunConfig (rebuilds every model)
    runs/<name>/<member>.safetensors    weights and buffers (incl. normalisation statistics) of each member
    runs/<name>/ood.safetensors         the "I don't know" signal: feature statistics and validation's scores (ood.py;
                                        absent from folders made before it)
    runs/<name>/ensemble.json           format, members (kind, weights file, temperature), voting weights, weighting,
                                        classes (the outputs' names; Fashion-MNIST's when absent, as in older folders)
    runs/<name>/history.json            {"members": {name: {"best_epoch", "epochs": [...]}}, "timing": {...}}
    runs/<name>/metrics.json            test-split scores: {"protocol", "seed", "models": {...}, ...}
    runs/<name>/report.md + *.png       the report (report.py) and its plots
    runs/.<name>.partial/               the same folder while a run writes it, with checkpoints/<member>.safetensors
                                        and checkpoints/split.json (the split's facts: a resume must find the same);
                                        renamed to <name> when complete (a complete folder holds no checkpoints)
    runs/.<name>.lock                   held (flock) by the process writing the folder; a second one is refused
    runs/<name>/.rewrite/               new versions of some of a complete folder's files (`revote`, `ood`): they
                                        replace the old ones as one unit once .rewrite/COMMITTED exists (see
                                        `RunFolder.rewrite`)

Reading never trusts the files: ensemble.json is checked against a schema, weights files must lie in the folder,
the config's shapes are compared with the safetensors header before a model is built, weights must be finite
floats, ood.safetensors must fit the members' widths and have been fit for this run (ensemble.json's "run_id", a
digest of the members' weights as first saved), and ensemble.json's weighting must be the one config.json names.

Every folder written so far is format 1 ("fashion-ensemble/1" in ensemble.json); a reader for an older layout goes
here when the layout changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from fashion_ensemble.config import RunConfig
from fashion_ensemble.config.classes import CLASSES
from fashion_ensemble.errors import UserError
from fashion_ensemble.members import build_model
from fashion_ensemble.model import ood
from fashion_ensemble.model.ensemble import Member, SoftVotingEnsemble, check_temperature

FORMAT = "fashion-ensemble/1"
CONFIG, ENSEMBLE, HISTORY, METRICS, REPORT = "config.json", "ensemble.json", "history.json", "metrics.json", "report.md"
PARTIAL = ".partial"
REWRITE, COMMITTED = ".rewrite", "COMMITTED"
STARTED_ON = "split.json"  # in a partial folder's checkpoints/: what a resume must train on again


def default_path(cfg: RunConfig, *, seeds: str | None = None, prefix: str = "", root: str | os.PathLike = "runs"
                 ) -> Path:
    """runs/[<prefix>]<profile>-<protocol>-<seeds>-<time>; `seeds` defaults to "seed<N>" (a multi-seed study
    passes e.g. "seeds0-2", an ablation the prefix "ablation-")."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{prefix}{cfg.profile}-{cfg.data.protocol}-{seeds or f'seed{cfg.seed}'}-{stamp}"


class RunFolder:
    """A run folder at `path`; while a run writes it, it lives beside that as `.<name>.partial` (`partial`).
    Give either name: the partial one is mapped back to the folder's."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.name.startswith(".") and path.name.endswith(PARTIAL):
            path = path.with_name(path.name[1 : -len(PARTIAL)])
        self.path = path
        self.partial = path.with_name(f".{path.name}{PARTIAL}")

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- state ---------------------------------------------------------------------------------------------------
    def is_complete(self) -> bool:
        return (self.path / METRICS).is_file()

    def is_partial(self) -> bool:
        """A stopped (or running) run's folder exists: `resume_study` can go on from it."""
        return self.partial.is_dir()

    @property
    def current(self) -> Path:
        """Where the files are now: the folder once complete, else the partial one being written."""
        return self.path if self.path.is_dir() or not self.partial.is_dir() else self.partial

    # -- paths -----------------------------------------------------------------------------------------------------
    def checkpoint(self, member: str) -> Path:
        return self.partial / "checkpoints" / f"{member}.safetensors"

    @property
    def tensorboard(self) -> Path:
        return self.partial / "tensorboard"

    @property
    def report(self) -> Path:
        return self.file(REPORT)

    def file(self, name: str) -> Path:
        """Where file `name` is now: its committed new version while a rewrite is being switched in, else the
        folder's own."""
        staged = self.current / REWRITE / name
        if (self.current / REWRITE / COMMITTED).is_file() and staged.exists():
            return staged
        return self.current / name

    def _read(self, name: str, reader):
        """`reader(path)` of file `name`; once more if a rewrite moved it in between (then the folder's own is the
        new one)."""
        try:
            return reader(self.file(name))
        except (FileNotFoundError, UserError):
            staged = self.current / REWRITE / name
            if not staged.parent.is_dir():
                raise
            return reader(self.current / name)

    # -- reading -------------------------------------------------------------------------------------------------
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self._read(CONFIG, read_json))

    def metrics(self) -> dict:
        return self._read(METRICS, read_json)

    def ensemble_spec(self) -> dict:
        """ensemble.json as written (unchecked: `load` checks it)."""
        return self._read(ENSEMBLE, read_json)

    def run_id(self) -> str | None:
        """ensemble.json's "run_id" (None in folders made before it)."""
        return self.ensemble_spec().get("run_id")

    def weights_digest(self, loaded: SoftVotingEnsemble | None = None) -> str:
        """The members' weights digest: the run_id, or for a folder made before run_ids (the shipped model's), the
        same digest computed from its weights (`loaded`: this folder's ensemble, if the caller has it already)."""
        return self.run_id() or weights_digest(loaded if loaded is not None else self.load())

    def history(self) -> dict:
        """{"members": ..., "timing": {...}}; "timing" is {} for runs made before it was recorded."""
        history = self._read(HISTORY, read_json)
        history.setdefault("timing", {})
        return history

    def load(self, device: str | torch.device = "cpu", spec: dict | None = None, config: RunConfig | None = None
             ) -> SoftVotingEnsemble:
        """Rebuild the ensemble from the folder alone: config.json, ensemble.json and the members' safetensors (or,
        for `spec` and `config`, the contents of the two files about to be written: `revote` scores a vote as it
        will be saved). Files that do not belong together (a vote's weighting that config.json does not name) are
        refused."""
        if not self.current.is_dir():
            raise UserError(f"run folder {self.path} does not exist")
        config = config or self.config()
        spec = check_ensemble_spec(spec if spec is not None else self.ensemble_spec(), self.file(ENSEMBLE))
        if spec.get("weighting", config.ensemble.weights) != config.ensemble.weights:
            raise UserError(f"{self.current}: ensemble.json votes with {spec['weighting']!r} weights but config.json "
                            f"says {config.ensemble.weights!r}: the files do not belong together; fit the vote again "
                            f"with `fashion-ensemble revote {self.path} --weighting {config.ensemble.weights}`")
        classes = spec.get("classes", CLASSES)
        shape = config.data.input_shape  # (1, 28, 28) for folders made before image_size and channels existed
        members = {}
        for name, info in spec["members"].items():
            member_cfg = config.members.get(name)
            if member_cfg is None:
                raise UserError(f"{self.current}: ensemble.json names member {name!r}, which config.json does not "
                                "define")
            path = self.file(info["weights_file"])
            with torch.device("meta"):  # the config's shapes, allocating nothing, against the file's header
                check_header(path, build_model(member_cfg.kind, member_cfg.model, len(classes), shape))
            model = build_model(member_cfg.kind, member_cfg.model, len(classes), shape)
            model.load_state_dict(load_weights(path, model))
            members[name] = Member.from_config(member_cfg, model, device, temperature=info.get("temperature", 1.0))
        ensemble = SoftVotingEnsemble(members, [spec["weights"][name] for name in members], classes,
                                      pipeline=config.data.pipeline)
        if self.file(ood.FILE).is_file():  # folders made before the "I don't know" signal have none
            widths = {name: m.model.body[-1].in_features for name, m in members.items()}  # what `features` gives
            ensemble.ood = self._read(ood.FILE, lambda path: ood.Detector.load(path, widths, fitted_for(spec, shape)))
        return ensemble

    @contextlib.contextmanager
    def lock(self):
        """Hold the folder for this process while it writes it: a second run or resume of it is refused while this
        one lives (an advisory flock, released by the kernel however the process ends)."""
        path = self.path.with_name(f".{self.path.name}.lock")  # in the folder's parent, which must exist
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                raise UserError(f"{self.path} is being written by another process (pid {holder or '?'}); wait for "
                                "it to end, or stop it and go on with --resume") from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break  # else its holder removed it between our open and our lock: take the new file
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            self._settle()  # a rewrite that a killed process left: finished if committed, else dropped
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)

    @contextlib.contextmanager
    def rewrite(self):
        """Replace several files of a complete folder as one unit (hold `lock` around it). Yields a staging folder
        (RUN/.rewrite/) to write the new versions into, under their final names; on a clean exit they are
        committed (RUN/.rewrite/COMMITTED, written last, by one rename) and moved into the folder. Until the commit,
        readers see the old files; from it, the new ones (`file`), even if the process dies while moving them; the
        next writer finishes the move (`_settle`). An exception before the commit leaves the folder as it was."""
        stage = self.path / REWRITE
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        try:
            yield stage
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        for f in stage.iterdir():
            _fsync(f)
        marker = stage / f".{COMMITTED}.partial"
        marker.write_text(json.dumps(sorted(f.name for f in stage.iterdir())) + "\n")
        _fsync(marker)
        marker.replace(stage / COMMITTED)  # the commit point
        _fsync(stage)
        self._settle()

    def _settle(self) -> None:
        """Finish a committed rewrite (move its files in, then drop the staging folder) or drop an uncommitted one."""
        stage = self.path / REWRITE
        if not stage.is_dir():
            return
        if (stage / COMMITTED).is_file():
            for f in sorted(stage.iterdir()):
                if f.name != COMMITTED and not f.name.startswith("."):
                    f.replace(self.path / f.name)
            _fsync(self.path)
        shutil.rmtree(stage, ignore_errors=True)

    # -- writing (into the partial folder) ------------------------------------------------------------------------
    def start(self, cfg: RunConfig, *, restart: bool = False, split_facts: dict | None = None) -> None:
        """A fresh partial folder holding config.json, and beside the checkpoints the facts of the split it trains
        on (`started_on`). A stopped run's partial folder (its checkpoints) is refused unless `restart` says to delete
        it."""
        if self.is_partial():
            if not restart:
                raise UserError(f"a stopped run of {self.path} is in {self.partial} (its checkpoints): go on with "
                                f"`fashion-ensemble run --resume {self.path}`, or start over with --restart, which "
                                "deletes them")
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        write_json(self.partial / CONFIG, cfg.to_dict())
        if split_facts is not None:
            (self.partial / "checkpoints").mkdir()
            write_json(self.partial / "checkpoints" / STARTED_ON, split_facts)

    def write_config(self, cfg: RunConfig) -> None:
        """config.json again, while the folder is partial: what the run learnt of its own plan as it trained (the
        epoch a deadline stopped a member after)."""
        write_json(self.partial / CONFIG, cfg.to_dict())

    def started_on(self) -> dict | None:
        """The split facts a stopped run recorded when it started (None: a run from before they were recorded)."""
        path = self.partial / "checkpoints" / STARTED_ON
        return read_json(path) if path.is_file() else None

    def save_ensemble(self, ensemble: SoftVotingEnsemble, weighting: str) -> None:
        """Each member's weights and ensemble.json (kinds, files, temperatures, voting weights, and the run's id:
        a digest of the weights, by tensor: a safetensors header's metadata comes in no fixed order)."""
        for name, member in ensemble.members.items():
            save_weights(self.partial / f"{name}.safetensors", member.model, member.kind)
        write_json(self.partial / ENSEMBLE, ensemble_spec(ensemble, weighting, run_id=weights_digest(ensemble)))

    def save_ood(self, detector, into: Path | None = None) -> None:
        """ood.safetensors: the "I don't know" signal's statistics (ood.py), with what it was fit for (the run's
        id, classes and input shape). Into the partial folder while a run writes it, or into `into` (a rewrite's
        staging folder)."""
        spec, shape = self.ensemble_spec(), self.config().data.input_shape
        detector.save((into or self.partial) / ood.FILE, fitted_for(spec, shape))

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.partial / METRICS, metrics)

    def write_history(self, members: dict, timing: dict, environment: dict | None = None) -> None:
        """history.json: per-epoch records, timing and the environment — what may differ between two runs of the
        same config (metrics.json, identical for an interrupted-and-resumed run, holds none of it)."""
        write_json(self.partial / HISTORY, {"members": members, "timing": timing,
                                            **({"environment": environment} if environment else {})})

    def complete(self) -> Path:
        """Drop the checkpoints and rename the partial folder to its final name; returns that."""
        shutil.rmtree(self.partial / "checkpoints", ignore_errors=True)
        self.partial.rename(self.path)
        return self.path


def weights_digest(ensemble: SoftVotingEnsemble) -> str:
    """A digest of every member's weights, by tensor (name, dtype, shape, bytes): a safetensors header's metadata
    comes in no fixed order, so the files' own bytes would not do. 32 hex digits of SHA-256."""
    digest = hashlib.sha256()
    for name, member in ensemble.members.items():
        for key, tensor in sorted(member.model.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}.{key}:{t.dtype}:{tuple(t.shape)}\0".encode())
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:32]


def ensemble_spec(ensemble: SoftVotingEnsemble, weighting: str, run_id: str | None = None) -> dict:
    """ensemble.json's content (format, members' kinds, files and temperatures, voting weights, classes, and the
    run's id, which a rewrite of the vote keeps)."""
    return {
        "format": FORMAT,
        "members": {name: {"kind": m.kind, "weights_file": f"{name}.safetensors", "temperature": m.temperature}
                    for name, m in ensemble.members.items()},
        "weights": ensemble.weights,
        "weighting": weighting,
        "classes": ensemble.classes,
        **({"run_id": run_id} if run_id else {}),
    }


def fitted_for(spec: dict, input_shape) -> dict:
    """What an ood.safetensors records of the run it was fit for, from that run's ensemble.json and input shape."""
    return {"run_id": spec.get("run_id"), "classes": list(spec.get("classes", CLASSES)),
            "input_shape": list(input_shape)}


# The model that ships with the package: a run folder (weights in half precision), made by scripts/ship_model.py
PRETRAINED = Path(__file__).parent / "pretrained"


def run_or_pretrained(run_dir: str | os.PathLike | None) -> Path:
    """`run_dir`, or the shipped model's folder when None."""
    if run_dir is not None:
        return Path(run_dir)
    if not (PRETRAINED / CONFIG).is_file():
        raise UserError(f"this installation has no shipped model ({PRETRAINED} is missing): train one with "
                        "`fashion-ensemble run` and give its folder")
    return PRETRAINED


def load(run_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
         engine: str = "auto") -> SoftVotingEnsemble:
    """Rebuild the ensemble from a run folder alone (see `RunFolder.load`); without one, the shipped model. Its
    predictions come from `engine` (SoftVotingEnsemble.engine): "auto", ONNX Runtime where it is installed and the
    device is the CPU, else PyTorch; "onnx" or "torch" to choose."""
    ensemble = RunFolder(run_or_pretrained(run_dir)).load(device)
    ensemble.engine = engine
    return ensemble


def pretrained(device: str | torch.device = "cpu", engine: str = "auto") -> SoftVotingEnsemble:
    """The model that ships with the package (its card: PRETRAINED / "MODEL_CARD.md", "report.md")."""
    return load(None, device, engine)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk, so that a rename after it never exposes a torn file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path.parent}: {path.name} is missing; is this a complete fashion-ensemble run folder?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def save_weights(path: Path, model: torch.nn.Module, kind: str) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        save_file(state, str(path), metadata={"format": FORMAT, "kind": kind})
    except SafetensorError as e:  # a full disk
        raise OSError(f"cannot write {path} ({e})") from None


def check_ensemble_spec(spec, path: Path) -> dict:
    """ensemble.json's schema: {"members": {name: {"weights_file": a file name in the folder, "temperature":
    a number in range (optional)}}, "weights": {name: a number}}; anything else is a UserError naming the field."""
    def bad(field: str, expected: str, got) -> UserError:
        return UserError(f"{path}: {field} must be {expected}, got {got!r}; the file is damaged (rewrite it, or "
                         "train again)")

    if not isinstance(spec, dict):
        raise bad("the file", "a JSON object", type(spec).__name__)
    members, weights = spec.get("members"), spec.get("weights")
    if not isinstance(members, dict) or not members:
        raise bad('"members"', "an object of one entry per member", members)
    if not isinstance(weights, dict):
        raise bad('"weights"', "an object of one voting weight per member", weights)
    for name, info in members.items():
        if not isinstance(info, dict):
            raise bad(f'"members"."{name}"', 'an object with "weights_file"', info)
        file = info.get("weights_file")
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
            raise bad(f'"members"."{name}"."weights_file"', "a file name inside the run folder", file)
        if "temperature" in info:
            t = info["temperature"]
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                raise bad(f'"members"."{name}"."temperature"', "a number", t)
            check_temperature(t)
        w = weights.get(name)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise bad(f'"weights"."{name}"', "a finite number ≥ 0", w)
    classes = spec.get("classes", CLASSES)
    if (not isinstance(classes, (list, tuple)) or len(classes) < 2 or len(set(classes)) != len(classes)
            or not all(isinstance(c, str) and c for c in classes)):
        raise bad('"classes"', "a list of two or more different names", classes)
    return spec


def check_header(path: Path, skeleton: torch.nn.Module) -> None:
    """Compare a safetensors file's tensor names and shapes (its header alone) with `skeleton`'s (a model on the meta
    device): a config that asks for far larger layers than the file holds is refused before anything is built."""
    if not path.is_file():
        raise UserError(f"{path.parent}: {path.name} is missing; the run folder is incomplete")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a safetensors file ({e}); weights are never read from pickles") from None
    _compare(path, shapes, {k: tuple(v.shape) for k, v in skeleton.state_dict().items()})


def _compare(path: Path, found: dict, expected: dict) -> None:
    missing, unexpected = set(expected) - set(found), set(found) - set(expected)
    if missing or unexpected:
        raise UserError(
            f"{path}: tensors do not match the model in config.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    for key, shape in found.items():
        if shape != expected[key]:
            raise UserError(f"{path}: {key} has shape {shape}, the model in config.json needs {expected[key]}")


def load_weights(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Read a safetensors file whose header `check_header` has matched with `model`'s names and shapes; every
    floating tensor of the model must be a finite float in the file (NaN or integer weights are a damaged file)."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a safetensors file ({e}); weights are never read from pickles") from None
    expected = model.state_dict()
    for key, tensor in state.items():
        if expected[key].is_floating_point():
            if not tensor.is_floating_point():
                raise UserError(f"{path}: {key} is {tensor.dtype}, not floating point; the file is damaged")
            if not torch.isfinite(tensor).all():
                raise UserError(f"{path}: {key} holds NaN or infinite values; the file is damaged (train again)")
    return state
