"""The contract of one cached step: what the exported ONNX graph takes and returns, and what every backend that runs
it (onnxruntime in gptzoo.zoo.runtime, torch in gptzoo.zoo.kv_step) promises the generation loop.

The cache is a set of slots: every layer's keys and values live in preallocated buffers [slots, kv_heads, length,
head_dim]; a row of generation owns one slot, and position p of a row's window sits at column p of its slot. A step
feeds each of its rows T new tokens, which the graph writes at the end of the row's slot (its length says where) and
attends causally over the row's positions 0 .. its length. The attention is onnxruntime's GroupQueryAttention
(com.microsoft): it reads only each row's own length, and when a call binds the `present_*` outputs to the
`past_*` buffers (IO binding) it writes the new keys/values in place, so no step copies the cache. Its limits on the
CPU shape the calls: every row of a call feeds the same number of tokens, and a call that feeds more than one token
per row to rows that already hold some has one row. A slot has length block_size + 1: the last column takes what
idle rows of a decode call write.

Inputs (call rows B, new tokens T, logits wanted K, slot length L, all dynamic):
    input_ids      int64 [B, T]
    position_ids   int64 [B, T]          positions of the tokens: the learned position embedding's (gpt2: the slot
                                         column, < block_size), or RoPE's (oss: any, independent of the column)
    seqlens_k      int32 [B]             each row's length after this call, minus one: its tokens go to positions
                                         seqlens_k + 1 - T .. seqlens_k of its slot
    total_length   int32 []              the longest row's length after this call
    logits_index   int64 [B, K]          which of the T tokens to return logits for
    past_key_i, past_value_i  float [B, kv_heads, L, head_dim] for every layer i: the call's slots (kv_heads =
                                         n_head for the gpt2 block; fewer with grouped-query attention, oss)
Outputs:
    logits         float [B, K, vocab]
    present_key_i, present_value_i: the same slots, written
Metadata (ONNX metadata_props, strings; JSON for anything else): METADATA_KEYS, of which the runtime needs
RUNTIME_METADATA_KEYS; `cache_format` tells this contract ("slots") from the first one (a growing, concatenated
cache), whose files must be exported again.

The caller builds positions and lengths, which keeps the graph free of shape arithmetic and lets one graph serve
prefill, decode, chunked prefill, re-prefill of a full window and verification of drafted tokens.

Plain numpy and names only, so the exporter (gptzoo.exports), both backends and the generation loop can import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

INPUT_IDS, POSITION_IDS, SEQLENS_K, TOTAL_LENGTH, LOGITS_INDEX, LOGITS = (
    "input_ids", "position_ids", "seqlens_k", "total_length", "logits_index", "logits")
CACHE_FORMAT = "slots"

# The dimensions that vary from call to call, as named in the graph. The others are fixed by the model.
BATCH, NEW_TOKENS, WANTED, CACHE_LENGTH = "batch", "new_tokens", "wanted", "cache_length"

# Stamped by the exporter, in this order. The runtime reads the window and vocabulary back (the rest of the shape it
# takes from the inputs, and it tells the cache format by the input names); the others document where the graph came
# from.
METADATA_KEYS = ("gptzoo_id", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "tokenizer", "val_loss",
                 "opset", "exporter", "cache_format", "arch")
RUNTIME_METADATA_KEYS = ("block_size", "vocab_size")


def past_names(n_layer: int) -> list[str]:
    return [f"past_{kv}_{i}" for i in range(n_layer) for kv in ("key", "value")]


def present_names(n_layer: int) -> list[str]:
    return [f"present_{kv}_{i}" for i in range(n_layer) for kv in ("key", "value")]


def input_names(n_layer: int) -> list[str]:
    return [INPUT_IDS, POSITION_IDS, SEQLENS_K, TOTAL_LENGTH, LOGITS_INDEX, *past_names(n_layer)]


def output_names(n_layer: int) -> list[str]:
    return [LOGITS, *present_names(n_layer)]


def dims(name: str) -> list[str | None]:
    """The named (dynamic) dimensions of an input or output; None where the model fixes the size."""
    if name in (INPUT_IDS, POSITION_IDS):
        return [BATCH, NEW_TOKENS]
    if name == SEQLENS_K:
        return [BATCH]
    if name == TOTAL_LENGTH:
        return []
    if name == LOGITS_INDEX:
        return [BATCH, WANTED]
    if name == LOGITS:
        return [BATCH, WANTED, None]
    if name.startswith(("past_", "present_")):
        return [BATCH, None, CACHE_LENGTH, None]
    raise KeyError(f"{name!r} is not an input or output of the step graph")


@dataclass(frozen=True)
class GraphShape:
    n_layer: int
    n_head: int
    head_dim: int
    block_size: int  # longest window: positions run from 0 to block_size - 1
    vocab_size: int
    kv_heads: int = 0  # heads of a slot: fewer than n_head with grouped-query attention (the oss block); 0 = n_head
    arch: str = "gpt2"  # the block family (gptzoo.zoo.arch): oss positions are relative, gpt2's a learned table

    @classmethod
    def of(cls, config) -> GraphShape:
        """The shape of the graph exported from a model with this config (a GPTConfig or an OSSConfig)."""
        return cls(config.n_layer, config.n_head, config.head_dim, config.block_size, config.vocab_size,
                   getattr(config, "kv_heads", config.n_head), getattr(config, "arch", "gpt2"))

    @property
    def relative(self) -> bool:
        """Positions enter only as differences (RoPE) and the cache holds keys already rotated: a slot's entries may
        move to other columns and keep their positions (the `slide` context policy, gptzoo.zoo.generate)."""
        return self.arch == "oss"

    @property
    def cache_length(self) -> int:
        """Columns of a slot: the window, and one more for what idle rows of a decode call write."""
        return self.block_size + 1

    @property
    def cache_tensors(self) -> int:
        """Tensors of a cache, in graph order: key_0, value_0, key_1, …"""
        return 2 * self.n_layer

    def slot_shape(self, slots: int, length: int | None = None) -> tuple[int, int, int, int]:
        """The shape of each cache tensor (keys and values alike)."""
        return (slots, self.kv_heads or self.n_head, length or self.cache_length, self.head_dim)

    def cache_bytes(self, slots: int, length: int | None = None) -> int:
        """Memory of a float32 cache of `slots` rows: every layer's keys and values."""
        return self.cache_tensors * math.prod(self.slot_shape(slots, length)) * 4


@dataclass
class Call:
    """One step call over the consecutive slots first .. first + B - 1 of a cache (inputs as in the module doc)."""

    first: int
    ids: np.ndarray
    positions: np.ndarray
    seqlens_k: np.ndarray
    total_length: np.ndarray
    logits_index: np.ndarray

    @classmethod
    def fill(cls, first: int, tokens: list[list[int]] | np.ndarray, starts: list[int] | np.ndarray,
             wanted: list[int] | None = None, offsets: list[int] | np.ndarray | None = None) -> Call:
        """Row b feeds tokens[b] (every row as many) written from column starts[b] of slot first + b. `wanted`:
        which of the tokens to return logits for (default: the last). `offsets`: each row's position of column 0
        (default 0: positions are columns; only a relative-position graph takes others)."""
        ids = np.asarray(tokens, np.int64)
        if ids.ndim != 2:
            raise ValueError("every row of a call feeds the same number of tokens")
        B, T = ids.shape
        st = np.asarray(starts, np.int64)
        if T > 1 and B > 1 and st.any():
            raise ValueError("a call that feeds rows holding tokens already more than one token each has one row")
        want = np.tile(np.asarray([T - 1] if wanted is None else wanted, np.int64), (B, 1))
        pos = st[:, None] + np.arange(T)[None, :]
        if offsets is not None:
            pos += np.asarray(offsets, np.int64)[:, None]
        return cls(first, ids, pos, (st + T - 1).astype(np.int32),
                   np.array(int(st.max()) + T, np.int32), want)

    @classmethod
    def decode(cls, first: int, tokens: np.ndarray, starts: np.ndarray, live: np.ndarray,
               offsets: np.ndarray | None = None) -> Call:
        """One new token per row (the common step, built without a Python loop): row b feeds tokens[b] at column
        starts[b], position starts[b] + offsets[b] (offsets default to 0). Rows not `live` (free slots, rows busy
        elsewhere) feed a token too, which lands at their own starts[b] (no further than the last column), beyond
        what they hold: what they write is overwritten before it is ever read."""
        B = len(tokens)
        ids = np.where(live, tokens, 0).astype(np.int64)[:, None]
        at = starts if offsets is None else np.asarray(starts, np.int64) + offsets
        pos = np.where(live, at, 0).astype(np.int64)[:, None]
        return cls(first, ids, pos, np.asarray(starts, np.int32), np.array(int(starts.max()) + 1, np.int32),
                   np.zeros((B, 1), np.int64))

    @property
    def rows(self) -> int:
        return self.ids.shape[0]


@runtime_checkable
class StepRunner(Protocol):
    """A backend that runs the step on its own slot caches: the generation loop (gptzoo.zoo.generate) needs nothing
    else."""

    shape: GraphShape
    provider: str  # where it runs, e.g. "CPUExecutionProvider" or "torch"

    def new_cache(self, slots: int, length: int | None = None) -> object:
        """Zeroed buffers for `slots` rows of `length` columns (default: the window and one more), opaque to the
        caller."""
        ...

    def run(self, cache: object, call: Call) -> np.ndarray:
        """Logits [B, K, V] for `call`, whose keys/values are written into its slots of `cache` in place."""
        ...

    def decode(self, cache: object, first: int, tokens: Sequence[int], starts: Sequence[int],
               offsets: Sequence[int] | None = None) -> np.ndarray:
        """Logits [B, V] of `run(cache, Call.decode(first, tokens, starts, live, offsets))` where the rows not live
        feed token 0: the step of every token, which a backend may run faster than `run`. The array may be reused by
        the next call."""
        ...

    def extend(self, cache: object, slot: int, tokens: list[int], start: int, wanted: int,
               offset: int = 0) -> np.ndarray:
        """Logits [wanted, V] of the last `wanted` of `tokens` fed to one slot from column `start`:
        `run(cache, Call.fill(slot, [tokens], [start], wanted=…, offsets=[offset]))[0]`, the verification of
        speculative decoding, which a backend may run faster. The array may be reused by the next call."""
        ...

    def move(self, cache: object, slot: int, src: int, n: int) -> None:
        """Columns src .. src + n - 1 of one slot to columns 0 .. n - 1, in every layer's keys and values, in place:
        no recompute (the `slide` context policy; meaningful for relative positions only)."""
        ...


def logits_without_cache(runner: StepRunner, ids: np.ndarray) -> np.ndarray:
    """Logits [B, T, V] of every position of `ids` [B, T] (T <= block_size), causal from its first token: the
    training forward, through the step (evaluation, parity)."""
    B, T = ids.shape
    return runner.run(runner.new_cache(B, T), Call.fill(0, ids, np.zeros(B, np.int64), wanted=list(range(T))))
