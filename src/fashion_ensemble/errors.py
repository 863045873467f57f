"""The exception type for a user's mistake, and the warning for what a user should know that stops nothing: the CLI
prints either as one line (an error exits non-zero)."""


class UserError(Exception):
    """Bad input, a missing file, a wrong option: something the user can fix. The message says what and how."""


class Notice(UserWarning):
    """Worth a user's attention, not an error: files left out of a data set, a run folder too old to check fully.
    Raised with `warnings.warn`, so that code which computes never prints; the CLI shows it as one line."""


def check(ok: bool, name: str, value, expected: str) -> None:
    """A configuration value's check: refused with what was received and what is accepted."""
    if not ok:
        raise UserError(f"config: {name} must be {expected}, got {value!r}")
