"""The CLI with a stop point that a test chooses, not a time it guesses:

    python tests/stopper.py POINT -- fashion-ensemble arguments...

POINT is `checkpoint:MEMBER:EPOCH:before|after` (right before or after MEMBER's checkpoint of EPOCH is saved) or
`replace:N` (right before the N-th file rename of the process, 1-based: the rewrites of a run folder). There the
process stops itself with SIGSTOP; the test then kills it (or interrupts and continues it), whatever the machine's
load: the point is reached by what the process does, never by how long it takes."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def stop() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


def main() -> int:
    point, rest = sys.argv[1], sys.argv[sys.argv.index("--") + 1 :]
    kind, *spec = point.split(":")
    if kind == "checkpoint":
        import fashion_ensemble.training.trainer as train

        member, epoch, when = spec[0], int(spec[1]), spec[2]
        real = train.save_checkpoint

        def save(path, **kwargs):
            hit = Path(path).stem == member and kwargs["state"].next_epoch - 1 == epoch
            if hit and when == "before":
                stop()
            real(path, **kwargs)
            if hit and when == "after":
                stop()

        train.save_checkpoint = save
    elif kind == "replace":
        target, count = int(spec[0]), 0
        real_replace = Path.replace

        def replace(self, other):
            nonlocal count
            count += 1
            if count == target:
                print(f"stopper: stopped before renaming {self} to {other}", file=sys.stderr, flush=True)
                stop()
            return real_replace(self, other)

        Path.replace = replace
    else:
        raise SystemExit(f"unknown stop point {point!r}")
    from fashion_ensemble.cli import main as cli

    return cli(rest)


if __name__ == "__main__":
    sys.exit(main())
