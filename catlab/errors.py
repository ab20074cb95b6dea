"""The two kinds of failure a user sees.

UserError: bad input (config, paths, names). The CLI prints its one-line message and exits 2.
RunFailed: a run started and failed (NaN, crash). The CLI prints the reason and exits 1.
"""


class UserError(Exception):
    """Bad input, found before any compute starts. The message is one line that names the field."""


class RunFailed(Exception):
    """A run that started and could not finish. The message is the reason."""
