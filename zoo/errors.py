"""Helpers for turning exceptions into the one-line messages the CLI and the server show."""

from __future__ import annotations


def first_line(e: BaseException) -> str:
    """An exception's first line; its type's name when it has no text (a bare IndexError, a KeyError of '')."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
