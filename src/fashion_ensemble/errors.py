"""One exception type for a user's mistake: the CLI prints its message as one line and exits non-zero."""


class UserError(Exception):
    """Bad input, a missing file, a wrong option: something the user can fix. The message says what and how."""
