"""Names of variants and datasets: plain identifiers that are also folder names.

A name becomes a path under the store or the data folder, so it must never be able to point anywhere else: no
slashes, no `..`, no absolute paths, nothing hidden. Every place a name enters (CLI options, import, the store's
listing) checks it here before anything on disk is touched.
"""

from __future__ import annotations

import re

from gptzoo.zoo.errors import BadValue

MAX_LENGTH = 64
RULE = f"lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most {MAX_LENGTH} characters"
_VALID = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{MAX_LENGTH - 1}}}")
_INVALID_RUN = re.compile(r"[^a-z0-9._-]+")


class InvalidName(BadValue):
    """A variant or dataset name that is not a plain identifier (a usage error: nothing was touched)."""


def check_name(name: str, what: str = "variant id") -> str:
    """`name` unchanged when it is a plain identifier, else InvalidName saying the rule."""
    if not isinstance(name, str) or not _VALID.fullmatch(name):
        shown = name if len(str(name)) <= 80 else f"{str(name)[:80]}…"
        raise InvalidName(f"invalid {what} {shown!r}: use {RULE}")
    return name


def to_name(text: str, fallback: str) -> str:
    """A valid name derived from free text (a file's stem, a config value): lowercased, other characters folded
    into '-', cut to length; `fallback` when nothing usable is left."""
    name = _INVALID_RUN.sub("-", text.lower()).lstrip("._-")[:MAX_LENGTH].rstrip("-")
    return name if _VALID.fullmatch(name) else fallback
