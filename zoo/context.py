"""Context policies: what generation does when a row's window (block_size tokens of its slot) is full
(gptzoo.zoo.generate applies them; gptzoo.zoo.evaluate.policy_nll scores them).

- `exact`: as nanoGPT's `generate`, every further token re-runs the last block_size tokens with no cache (the
  positions shift, so no cache stays exact). Greedy output equals nanoGPT's token for token.
- `half`: re-prefill the last block_size/2 tokens once and decode from the cache again until the window fills. The
  model sees between half and all of the window. The gpt2 block's default.
- `slide` (relative positions only: the oss block): keep the last `keep` entries of the slot by moving them to its
  front (a memmove in every layer's keys and values, no recompute) and go on decoding at the true positions (slot
  column + the row's offset): the cache holds keys already rotated by their own positions, so moved entries stay
  right. Sliding-window layers see exactly their window while `keep` >= the window; full-attention layers see
  between `keep` and block_size recent tokens. No re-prefill: a row past the window costs what a row inside it
  does, and never stalls the batch. The oss block's default.

A gpt2 block cannot slide: its learned position table ends at block_size, and its cached keys carry their columns'
positions.
"""

from __future__ import annotations

from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.step_contract import GraphShape

POLICIES = ("exact", "half", "slide")
# Share of the window `slide` keeps: 3/4 measured within 0.01 of 7/8 in loss, moving every block/4 tokens
# (docs/oss.md, "Past the window").
SLIDE_KEEP = 0.75


def default_policy(shape: GraphShape) -> str:
    """`slide` where positions are relative (oss), `half` otherwise (gpt2)."""
    return "slide" if shape.relative else "half"


def resolve(policy: str | None, shape: GraphShape) -> str:
    """The policy a model runs under: `policy`, or its family's default when None; BadValue for an unknown one, or
    `slide` on a block with learned positions."""
    if policy is None:
        return default_policy(shape)
    if policy not in POLICIES:
        raise BadValue(f"unknown context policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    if policy == "slide" and not shape.relative:
        raise BadValue(f"the slide context policy needs relative positions (the oss block); this {shape.arch} "
                       "variant's learned positions end at its window: use half or exact")
    return policy


def policies_for(shape: GraphShape) -> tuple[str, ...]:
    """The policies a model can run under."""
    return POLICIES if shape.relative else tuple(p for p in POLICIES if p != "slide")


def slide_keep(block_size: int, share: float = SLIDE_KEEP) -> int:
    """Entries `slide` keeps of a full window: at most block_size - 1 (the next token needs a column)."""
    return min(block_size - 1, max(0, int(block_size * share)))
