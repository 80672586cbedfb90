"""Names of variants and datasets: plain identifiers that are also folder names.

A name becomes a path under the store or the data folder, so it must never be able to point anywhere else: no
slashes, no `..`, no absolute paths, nothing hidden. Every place a name enters (CLI options, import, the store's
listing) checks it here before anything on disk is touched.

Some names route instead of naming one variant: `auto` (the server's pick of a variant) is reserved for variant ids
and dataset names alike (a dataset's name is its family's), and a variant id may not be a family name (every depth
trained on one dataset: `shakespeare-char`), or a request naming it could never reach the variant.
"""

from __future__ import annotations

import re

from gptzoo.zoo.errors import BadValue

MAX_LENGTH = 64
RULE = f"lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most {MAX_LENGTH} characters"
_VALID = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{MAX_LENGTH - 1}}}")
_INVALID_RUN = re.compile(r"[^a-z0-9._-]+")
RESERVED = {"auto": "`auto` names the server's pick of a variant (depth routing)"}


class InvalidName(BadValue):
    """A variant or dataset name that is not a plain identifier (a usage error: nothing was touched)."""


def check_name(name: str, what: str = "variant id") -> str:
    """`name` unchanged when it is a plain identifier, else InvalidName saying the rule."""
    if not isinstance(name, str) or not _VALID.fullmatch(name):
        shown = name if len(str(name)) <= 80 else f"{str(name)[:80]}…"
        raise InvalidName(f"invalid {what} {shown!r}: use {RULE}")
    if name in RESERVED:
        raise InvalidName(f"{what} {name!r} is reserved: {RESERVED[name]}; pick another name")
    return name


def check_not_family(vid: str, families: set[str]) -> str:
    """`vid` unchanged unless it is one of `families` (family ids, as `store.family_id` spells them)."""
    if vid in families:
        raise InvalidName(f"variant id {vid!r} is a family name (a request naming it gets the best of that dataset's "
                          f"depths, never this variant); pick another id, e.g. {vid}-<layers>l")
    return vid


def to_name(text: str, fallback: str) -> str:
    """A valid name derived from free text (a file's stem, a config value): lowercased, other characters folded
    into '-', cut to length; `fallback` when nothing usable is left."""
    name = _INVALID_RUN.sub("-", text.lower()).lstrip("._-")[:MAX_LENGTH].rstrip("-")
    return name if _VALID.fullmatch(name) else fallback
