"""The one exception type that means "the user can fix this"."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the input (a name, a value, a file) that the user can fix.

    The CLI prints its message on one line and exits with status 2, without a traceback.
    The message names the problem and what to do about it.
    """

    exit_code = 2
