"""How a run's configuration is made: a profile or a JSON file, then a seed, a data source and `--set` overrides
(`resolve`, the CLI's way), and the small edits the CLI's options and the ablation's levers apply to one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from pathlib import Path

from fashion_ensemble.config.profiles import profile
from fashion_ensemble.config.schema import BudgetConfig, MemberConfig, RunConfig
from fashion_ensemble.errors import UserError


def override(cfg: RunConfig, assignments: typing.Iterable[str]) -> RunConfig:
    """`cfg` with fields set from "dotted.path=value" strings, e.g. "members.cnn.train.epochs=12" (the CLI's --set).
    A value is read as JSON (12, 0.5, true, [[32], [64]]), else taken as a string; the result is checked as a whole."""
    d = cfg.to_dict()
    for item in assignments:
        path, sep, text = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise UserError(f"--set expects PATH=VALUE such as members.cnn.train.epochs=12, got {item!r}")
        node = d
        for i, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                known = sorted(node) if isinstance(node, dict) else []
                where = ".".join(keys[:i]) or "the top level"
                raise UserError(f"--set {item!r}: no field {key!r} at {where}; known: {', '.join(known) or 'none'}")
            if i == len(keys) - 1:
                try:
                    node[key] = json.loads(text)
                except json.JSONDecodeError:
                    node[key] = text
            else:
                node = node[key]
    return RunConfig.from_dict(d)


def map_members(cfg: RunConfig, fn: typing.Callable[[MemberConfig], MemberConfig], kind: str | None = None
                ) -> RunConfig:
    """`cfg` with `fn` applied to each member (of `kind`, when given)."""
    return cfg.replace(members={n: fn(m) if kind in (None, m.kind) else m for n, m in cfg.members.items()})


def with_train(m: MemberConfig, **changes) -> MemberConfig:
    """A member with fields of its `train` config changed."""
    return dataclasses.replace(m, train=dataclasses.replace(m.train, **changes))


def with_augment(m: MemberConfig, **changes) -> MemberConfig:
    """A member with fields of its augmentation changed."""
    return with_train(m, augment=dataclasses.replace(m.train.augment, **changes))


def with_precision(cfg: RunConfig, precision: str) -> RunConfig:
    """`cfg` with every member trained in `precision` ("auto", "fp32" or "bf16"); the CLI's --precision."""
    return map_members(cfg, lambda m: with_train(m, precision=precision))


def without_flips(cfg: RunConfig) -> RunConfig:
    """`cfg` with no mirror images anywhere: neither flip augmentation nor flip TTA, for classes that a mirror changes
    (digits, letters, text, left/right shoes); the CLI's --no-flips."""
    return map_members(cfg, lambda m: dataclasses.replace(with_augment(m, flip=False), tta_flip=False))


DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """Seconds in a duration as a user writes it: "10m", "2h", "90s", "1h30m", "2.5m", or a plain number of
    seconds; refused in one line when it is not one, or not above zero."""
    t = str(text).strip().lower().replace(" ", "")
    m = DURATION.fullmatch(t) if t else None
    if t and m and any(m.groups()):
        h, mins, sec = (float(g) if g else 0.0 for g in m.groups())
        seconds = 3600 * h + 60 * mins + sec
    else:
        try:
            seconds = float(t)
        except ValueError:
            seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"--time-limit {text!r}: expected a duration above zero such as 10m, 2h, 90s or 1h30m")
    return seconds


def with_time_limit(cfg: RunConfig, seconds: float | None) -> RunConfig:
    """`cfg` planned to end within `seconds` (the CLI's --time-limit), each member's recipe scaled to fit; None: as
    it is."""
    if seconds is None:
        return cfg
    return cfg.replace(budget=BudgetConfig(time_limit_s=float(seconds)))


OVERLAY_KEYS = {"base", "members", "set"}


def read_config_file(path: str | os.PathLike) -> RunConfig:
    """A RunConfig written as JSON, checked like any config: either whole (a run folder's config.json), or an overlay
    on a profile (docs/configs/): {"base": "default", "members": ["cnn"], "set": {"members.cnn.train.epochs": 16}},
    the profile with only the members named (all when absent), then each path set as `--set` would."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path}: not valid JSON ({e})") from None
    if isinstance(data, dict) and "base" in data:
        return overlay(data, where=f"--config {path}")
    return RunConfig.from_dict(data)


def overlay(data: dict, where: str = "config") -> RunConfig:
    """The config an overlay describes (read_config_file's second form)."""
    unknown = set(data) - OVERLAY_KEYS
    if unknown:
        raise UserError(f"{where}: unknown overlay key(s) {sorted(unknown)}; an overlay has {sorted(OVERLAY_KEYS)}")
    cfg = profile(data["base"]) if isinstance(data["base"], str) else profile(repr(data["base"]))
    keep = data.get("members", list(cfg.members))
    if not isinstance(keep, list) or not set(keep) <= set(cfg.members) or not keep:
        raise UserError(f"{where}: \"members\" must list some of the base's members {sorted(cfg.members)}, got "
                        f"{keep!r}")
    cfg = cfg.replace(members={name: cfg.members[name] for name in keep})
    changes = data.get("set", {})
    if not isinstance(changes, dict):
        raise UserError(f"{where}: \"set\" must map dotted paths to values, got {changes!r}")
    return override(cfg, [f"{k}={json.dumps(v)}" for k, v in changes.items()])


def resolve(*, profile_name: str | None = None, config_file: str | os.PathLike | None = None,
            protocol: str | None = None, seed: int | None = None, data_source: str | None = None,
            overrides: typing.Iterable[str] = (), default_profile: str = "default") -> RunConfig:
    """A run's configuration, in this order of precedence (each over the one before): a named profile (else
    `default_profile`) or a JSON file (not both; a file brings its own protocol), then `seed` (the profile's default
    is 0, a file keeps its own) and `data_source` (`--data`), then the `--set` overrides. A `--set` of a member's
    `train.epochs` makes the run a fixed schedule: the budget is dropped (the CLI's --time-limit brings one back,
    with those epochs as the recipe it scales)."""
    if config_file and (profile_name or protocol):
        raise UserError("--config gives the whole configuration; drop --profile/--protocol (--seed may override it)")
    if config_file:
        cfg = read_config_file(config_file)
        cfg = cfg if seed is None else cfg.replace(seed=seed)
    else:
        cfg = profile(profile_name or default_profile, protocol=protocol, seed=0 if seed is None else seed)
    if data_source is not None:
        cfg = cfg.replace(data=dataclasses.replace(cfg.data, source=data_source))
    overrides = list(overrides)
    cfg = override(cfg, overrides)
    if cfg.budget is not None and any(SETS_EPOCHS.fullmatch(item.partition("=")[0].strip()) for item in overrides):
        cfg = cfg.replace(budget=None)  # epochs set by hand: a fixed schedule, as before budgets (--time-limit: scaled)
    return cfg


SETS_EPOCHS = re.compile(r"members\.[^.]+\.train\.epochs")  # a --set that fixes a member's schedule
