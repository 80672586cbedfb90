"""The names a variant goes by besides its id: its depth alias (`4l`), and how command-line lists of names
(`--models`, `--draft`) resolve to ids."""

from __future__ import annotations

import re
from collections.abc import Iterable

from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.store import Variant


def depth_alias(v: Variant) -> str:
    """`shakespeare-char-4l` -> `4l`, `shakespeare-char-4l-int8` -> `4l-int8`. A quantized copy's alias always says
    so (`d4-int8` -> `4l-int8`), whatever its id: the plain `4l` stays the full-precision variant's."""
    if v.card.quantization:
        return f"{v.n_layer}l-{v.card.quantization.split('-')[0]}"  # int8-dynamic -> 4l-int8
    m = re.search(rf"(?:^|-)({v.n_layer}l(?:-.*)?)$", v.id)
    return m.group(1) if m else f"{v.n_layer}l"


def resolve_names(variants: list[Variant], names: Iterable[str], option: str = "--models") -> list[str]:
    """The ids that `names` (ids or depth aliases) denote; BadValue, naming `option`, for a name that is unknown or
    ambiguous."""
    ids = {v.id for v in variants}
    out = []
    for name in names:
        matches = [name] if name in ids else [v.id for v in variants if depth_alias(v) == name]
        if len(matches) != 1:
            listed = ", ".join(f"{v.id} ({depth_alias(v)})" for v in variants) or "none"
            why = f"matches several ({', '.join(matches)})" if matches else "is not in the store"
            raise BadValue(f"{option}: {name!r} {why}; variants: {listed}")
        out.append(matches[0])
    return out
