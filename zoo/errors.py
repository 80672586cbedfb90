"""gptzoo's error types and the one-line form they are shown in.

Every failure a user can cause or fix (bad input, a missing file, a broken store) raises a GptzooError subclass;
the CLI turns those into one line on stderr and an exit code, the server into a 4xx/5xx body. Anything else is a
bug and keeps its traceback."""

from __future__ import annotations


class GptzooError(Exception):
    """A failure the user can act on; its message says what is wrong (and, where it helps, what to do)."""


class BadValue(GptzooError, ValueError):
    """A value given by the user is out of its range or of the wrong kind (a ValueError too, for library callers)."""


def first_line(e: BaseException) -> str:
    """An exception's first line; its type's name when it has no text (a bare IndexError, a KeyError of '')."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


class Unsupported(GptzooError):
    """Something the zoo does not do yet for this kind of variant (e.g. exporting an oss-block variant)."""
