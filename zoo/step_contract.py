"""The contract of one cached step: what the exported ONNX graph takes and returns, and what every backend that runs
it (onnxruntime in gptzoo.zoo.runtime, torch in gptzoo.zoo.kv_step) promises the generation loop.

The cache is a set of slots: every layer's keys and values live in preallocated buffers, keys [slots, n_head,
head_dim, length] (transposed: a query's scores are then a plain matrix product) and values [slots, n_head, length,
head_dim]; a row of generation owns one slot, and position p of a row's window sits at column p of its slot. A step
writes the new tokens' keys/values where `cache_index` says and attends over the whole slot through `attn_bias`. The
graph's `present_*` outputs are its `past_*` inputs after the write; a backend binds both to the same buffer
(onnxruntime IO binding), so the write happens in place and no step copies the cache. The last column of a slot
(`length - 1`) is scratch: padding tokens write there and no query ever sees it.

Inputs (call rows B, new tokens T, logits wanted K, slot length L, all dynamic):
    input_ids     int64 [B, T]
    position_ids  int64 [B, T]          positions in the window (the learned position embedding)
    cache_index   int64 [B, T]          where each token's key/value goes in its row's slot (L - 1: scratch)
    attn_bias     float [B, 1, T, L]    0 where a query may attend, MASKED elsewhere
    logits_index  int64 [B, K]          which of the T tokens to return logits for
    past_key_i    float [B, n_head, head_dim, L]   for every layer i: the call's slots
    past_value_i  float [B, n_head, L, head_dim]
Outputs:
    logits        float [B, K, vocab]
    present_key_i, present_value_i: the same slots, written
Metadata (ONNX metadata_props, strings; JSON for anything else): METADATA_KEYS, of which the runtime needs
RUNTIME_METADATA_KEYS; `cache_format` tells this contract ("slots") from the first one (a growing, concatenated
cache), whose files must be exported again.

The caller builds positions, cache indices and the bias, which keeps the graph free of shape arithmetic and lets one
graph serve prefill, decode, chunked prefill, re-prefill of a full window and verification of drafted tokens.

Plain numpy and names only, so the exporter (gptzoo.exports), both backends and the generation loop can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

INPUT_IDS, POSITION_IDS, CACHE_INDEX, ATTN_BIAS, LOGITS_INDEX, LOGITS = (
    "input_ids", "position_ids", "cache_index", "attn_bias", "logits_index", "logits")
CACHE_FORMAT = "slots"

# The dimensions that vary from call to call, as named in the graph. The others are fixed by the model.
BATCH, NEW_TOKENS, WANTED, CACHE_LENGTH = "batch", "new_tokens", "wanted", "cache_length"

# Stamped by the exporter, in this order. The runtime reads the window, vocabulary and cache format back (the rest of
# the shape it takes from the inputs); the others document where the graph came from.
METADATA_KEYS = ("gptzoo_id", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "tokenizer", "val_loss",
                 "opset", "exporter", "cache_format")
RUNTIME_METADATA_KEYS = ("block_size", "vocab_size")

MASKED = np.float32(np.finfo(np.float32).min)  # additive bias for keys a query must not see (finite: no NaN rows)


def past_names(n_layer: int) -> list[str]:
    return [f"past_{kv}_{i}" for i in range(n_layer) for kv in ("key", "value")]


def present_names(n_layer: int) -> list[str]:
    return [f"present_{kv}_{i}" for i in range(n_layer) for kv in ("key", "value")]


def input_names(n_layer: int) -> list[str]:
    return [INPUT_IDS, POSITION_IDS, CACHE_INDEX, ATTN_BIAS, LOGITS_INDEX, *past_names(n_layer)]


def output_names(n_layer: int) -> list[str]:
    return [LOGITS, *present_names(n_layer)]


def dims(name: str) -> list[str | None]:
    """The named (dynamic) dimensions of an input or output; None where the model fixes the size."""
    if name in (INPUT_IDS, POSITION_IDS, CACHE_INDEX):
        return [BATCH, NEW_TOKENS]
    if name == ATTN_BIAS:
        return [BATCH, None, NEW_TOKENS, CACHE_LENGTH]
    if name == LOGITS_INDEX:
        return [BATCH, WANTED]
    if name == LOGITS:
        return [BATCH, WANTED, None]
    if name.startswith(("past_key", "present_key")):
        return [BATCH, None, None, CACHE_LENGTH]
    if name.startswith(("past_value", "present_value")):
        return [BATCH, None, CACHE_LENGTH, None]
    raise KeyError(f"{name!r} is not an input or output of the step graph")


def causal_bias(starts: np.ndarray, counts: np.ndarray, new: int, length: int) -> np.ndarray:
    """[B, 1, new, length]: row b's j-th new token (j < counts[b]) sits at position starts[b] + j of its slot and
    sees positions 0 .. starts[b] + j; its padding tokens (j >= counts[b]) see only the scratch column, so their
    softmax stays finite and nothing reads what they wrote."""
    q = starts[:, None] + np.arange(new)[None, :]  # [B, new] the position each token is written to
    ok = np.arange(length)[None, None, :] <= q[:, :, None]
    pad = np.arange(new)[None, :] >= counts[:, None]
    ok[pad] = False
    ok[:, :, length - 1] |= pad  # scratch
    return np.where(ok, np.float32(0.0), MASKED)[:, None]


@dataclass(frozen=True)
class GraphShape:
    n_layer: int
    n_head: int
    head_dim: int
    block_size: int  # longest window: positions run from 0 to block_size - 1
    vocab_size: int

    @classmethod
    def of(cls, config) -> GraphShape:
        """The shape of the graph exported from a model with this config (a gptzoo.zoo.model.GPTConfig)."""
        return cls(config.n_layer, config.n_head, config.head_dim, config.block_size, config.vocab_size)

    @property
    def cache_length(self) -> int:
        """Columns of a slot: the window and the scratch column."""
        return self.block_size + 1

    def slot_shapes(self, slots: int, length: int | None = None) -> list[tuple[int, int, int, int]]:
        """The shapes of every cache tensor, in graph order (key_0, value_0, key_1, …)."""
        L = length or self.cache_length
        return [(slots, self.n_head, self.head_dim, L), (slots, self.n_head, L, self.head_dim)] * self.n_layer


@dataclass
class Call:
    """One step call over the consecutive slots first .. first + B - 1 of a cache (inputs as in the module doc)."""

    first: int
    ids: np.ndarray
    positions: np.ndarray
    cache_index: np.ndarray
    bias: np.ndarray
    logits_index: np.ndarray

    @classmethod
    def fill(cls, first: int, tokens: list[list[int]], starts: list[int], length: int,
             wanted: list[list[int]] | None = None) -> Call:
        """A call where row b feeds `tokens[b]` written from position `starts[b]` of slot first + b, causal within
        the slot. Shorter rows are padded (their padding goes to the scratch column). `wanted[b]`: which of the row's
        tokens to return logits for (default: its last; a row with no tokens gets a padding token's logits)."""
        B, T = len(tokens), max(1, max(len(t) for t in tokens))
        ids = np.zeros((B, T), np.int64)
        pos = np.zeros((B, T), np.int64)
        at = np.full((B, T), length - 1, np.int64)
        counts = np.array([len(t) for t in tokens])
        st = np.asarray(starts, np.int64)
        for b, t in enumerate(tokens):
            n = len(t)
            ids[b, :n] = t
            pos[b, :n] = at[b, :n] = np.arange(st[b], st[b] + n)
        if wanted is None:
            want = np.maximum(counts - 1, 0)[:, None]
        else:
            K = max(len(w) for w in wanted)
            want = np.array([w + [w[-1]] * (K - len(w)) for w in wanted], np.int64)
        return cls(first, ids, pos, at, causal_bias(st, counts, T, length), want)

    @classmethod
    def decode(cls, first: int, tokens: np.ndarray, starts: np.ndarray, live: np.ndarray, length: int) -> Call:
        """One new token per row (the common step, built without a Python loop): row b feeds tokens[b] at position
        starts[b] when live[b]; the others (free slots, rows busy elsewhere) feed padding."""
        B = len(tokens)
        ids = np.where(live, tokens, 0).astype(np.int64)[:, None]
        pos = np.where(live, starts, 0).astype(np.int64)[:, None]
        at = np.where(live, starts, length - 1).astype(np.int64)[:, None]
        cols = np.arange(length)[None, :]
        ok = np.where(live[:, None], cols <= starts[:, None], cols == length - 1)
        bias = np.where(ok, np.float32(0.0), MASKED)[:, None, None, :]
        return cls(first, ids, pos, at, bias, np.zeros((B, 1), np.int64))

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
        """Zeroed buffers for `slots` rows of `length` columns (default the window and its scratch column), opaque to
        the caller. Zeros, because masking multiplies: a masked NaN would still poison a row; anything a slot holds
        later was computed, so finite, and the bias hides what a row did not write."""
        ...

    def run(self, cache: object, call: Call) -> np.ndarray:
        """Logits [B, K, V] for `call`, whose keys/values are written into its slots of `cache` in place."""
        ...


def logits_without_cache(runner: StepRunner, ids: np.ndarray) -> np.ndarray:
    """Logits [B, T, V] of every position of `ids` [B, T] (T <= block_size), causal from its first token: the
    training forward, through the step (evaluation, parity)."""
    B, T = ids.shape
    call = Call.fill(0, ids.tolist(), [0] * B, T + 1, wanted=[list(range(T))] * B)
    return runner.run(runner.new_cache(B, T + 1), call)
