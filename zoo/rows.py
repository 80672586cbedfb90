"""A row of a `Batch` (gptzoo.zoo.generate): one sequence on one slot of the slot cache; a `Feed`, what one step
writes to a row's slot; `Slots`, which row holds each slot, shared by the target's cache and the draft's (the
same slot indices in both); and `StepStats`, what a step did."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gptzoo.zoo.detok import StopText
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.step_contract import StepRunner


@dataclass(eq=False)  # rows are compared by identity
class Row:
    prompt: list[int]  # prompt token ids (already cropped to the window)
    params: SamplingParams
    text: StopText
    rng: np.random.Generator
    generated: list[int] = field(default_factory=list)
    slot: int = -1  # this row's slot in the batch's cache (-1: not in a batch)
    cached: int = 0  # positions 0 .. cached-1 of the slot hold this row's window
    pending: list[int] = field(default_factory=list)  # tokens to write before the next one can be sampled
    prompting: bool = False  # pending is (the rest of) the prompt: fed in chunks under the step's budget
    finish_reason: str | None = None  # "stop" or "length" when done
    on_text: Callable[[str], None] | None = None
    tag: object = None  # the caller's handle (e.g. a server request)
    may_draft: bool = False  # drafts when it pays (False: the batch has no draft, or the request opted out)
    start: int = 0  # the context index at column 0 of its slot (its window's first token)
    offset: int = 0  # the position of column 0 of its slot: 0, or what the `slide` policy moved out of it
    drafted: int = 0  # tokens the draft proposed for this row
    accepted: int = 0  # of which the target kept

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def context(self) -> list[int]:
        return self.prompt + self.generated

    def last(self, n: int) -> list[int]:
        """The last n tokens of the context, without copying the whole of it."""
        return self.generated[-n:] if n <= len(self.generated) else self.context[-n:]

    def take(self, token: int) -> None:
        """A sampled token joins the row: its text goes to on_text, and the row ends at a stop sequence or at
        max_tokens."""
        self.generated.append(token)
        delta = self.text.push(token)
        if self.text.stopped:
            self.finish_reason = "stop"
        elif len(self.generated) >= self.params.max_tokens:
            self.finish_reason = "length"
            delta += self.text.finish()
        if delta and self.on_text:
            self.on_text(delta)


class Feed:
    """What one step writes to a row's slot: `tokens`, from position `row.cached` on. (A slotted class: one is made
    per row and step, and a NamedTuple costs twice as much to make.)"""

    __slots__ = ("row", "tokens")

    def __init__(self, row: Row, tokens: list[int]):
        self.row, self.tokens = row, tokens


class Slots:
    """Which row holds each of a cache's `n` slots. Free slots are taken lowest first (a heap): that keeps the span
    of the batched one-token call short."""

    def __init__(self, n: int):
        self.n = n
        self.free = list(range(n))
        self.owner: list[Row | None] = [None] * n

    def take(self, row: Row) -> None:
        row.slot = heapq.heappop(self.free)
        self.owner[row.slot] = row

    def release(self, row: Row) -> None:
        """Nothing is copied: what the slot holds lies past the next owner's length, unread."""
        heapq.heappush(self.free, row.slot)
        self.owner[row.slot], row.slot = None, -1

    def one_token(self, model: StepRunner, cache, rows: list[Row], tokens: list[int],
                  length: Callable[[Row], int], offset: Callable[[Row], int] | None = None) -> np.ndarray:
        """Logits [len(rows), V] (a copy) of one call over `cache` feeding tokens[i] to rows[i] at column
        length(rows[i]) of its slot (position that + offset(rows[i]); offset None: 0), over the slots from the lowest
        to the highest of `rows`: slots in between, free or busy elsewhere, feed a token that lands past what they
        hold (gptzoo.zoo.step_contract). Callers decoding one row call `model.decode` directly: a single stream pays
        for every list built."""
        lo = min(r.slot for r in rows)
        B = max(r.slot for r in rows) - lo + 1
        at = np.array([r.slot - lo for r in rows], np.int64)
        ids = np.zeros(B, np.int64)
        ids[at] = tokens
        owners = self.owner[lo : lo + B]
        starts = np.array([length(r) if r else 0 for r in owners], np.int64)
        if offset is None:
            return model.decode(cache, lo, ids, starts)[at]
        return model.decode(cache, lo, ids, starts, np.array([offset(r) if r else 0 for r in owners], np.int64))[at]


def call_runs(feeds: list[Feed]) -> list[list[Feed]]:
    """Split feeds (sorted by slot) into calls: runs of neighbouring slots that feed equally many tokens from the
    start of their slots (fresh prompts, re-prefilled windows), every other feed alone."""
    runs: list[list[Feed]] = []
    for f in feeds:
        last = runs[-1][-1] if runs else None
        fresh = f.row.cached == 0 and last is not None and last.row.cached == 0
        if fresh and f.row.slot == last.row.slot + 1 and len(f.tokens) == len(last.tokens):
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


@dataclass
class StepStats:
    """What the last step did, for metrics: tokens written by multi-token calls (prompts, re-prefills) and rows
    decoded, the drafting rows' proposals and what the target kept of them, and the time each kind of call took."""

    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_rows: int = 0  # rows in the batched one-token call
    decode_seconds: float = 0.0
    verify_rows: int = 0  # rows that drafted: each verified in a call of its own
    verify_seconds: float = 0.0
    drafted: int = 0  # tokens the draft proposed
    accepted: int = 0  # of which the target kept
    draft_seconds: float = 0.0  # the draft model's calls
