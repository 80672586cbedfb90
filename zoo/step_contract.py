"""The contract of one cached step: what the exported ONNX graph takes and returns, and what every backend that runs
it (onnxruntime in gptzoo.zoo.runtime, torch in gptzoo.zoo.kv_step) promises the generation loop.

Inputs (batch B, new tokens T, past length P, all dynamic):
    input_ids     int64 [B, T]
    position_ids  int64 [B, T]          absolute positions; per row, so left-padded rows line up
    attn_bias     float [B, 1, T, P+T]  0 where a query may attend, MASKED (a large negative) elsewhere
    past_key_i, past_value_i  float [B, n_head, P, head_dim] for every layer i (P may be 0)
Outputs:
    logits        float [B, T, vocab]
    present_key_i, present_value_i  float [B, n_head, P+T, head_dim]
Metadata (ONNX metadata_props, strings; JSON for anything else): METADATA_KEYS, of which the runtime needs
RUNTIME_METADATA_KEYS.

The caller builds positions and the bias (`attention_bias`), which keeps the graph free of shape arithmetic and lets
one graph serve prefill, decode, chunked prefill and batches of rows with different lengths. The server and exports
already on disk rely on these names and shapes: change them only with a new export format.

Plain numpy and names only, so the exporter (gptzoo.exports), both backends and the generation loop can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

INPUT_IDS, POSITION_IDS, ATTN_BIAS, LOGITS = "input_ids", "position_ids", "attn_bias", "logits"

# The dimensions that vary from call to call, as named in the graph. The others are fixed by the model.
BATCH, NEW_TOKENS, PAST_LENGTH, TOTAL_LENGTH = "batch", "new_tokens", "past_length", "total_length"

# Stamped by the exporter, in this order. The runtime reads the window and vocabulary back (the rest of the shape it
# takes from the inputs); the others document where the graph came from.
METADATA_KEYS = ("gptzoo_id", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "tokenizer", "val_loss",
                 "opset", "exporter")
RUNTIME_METADATA_KEYS = ("block_size", "vocab_size")

MASKED = np.float32(np.finfo(np.float32).min)  # additive bias for keys a query must not see (finite: no NaN rows)


def past_names(n_layer: int) -> list[str]:
    return [f"past_{kv}_{i}" for i in range(n_layer) for kv in ("key", "value")]


def present_names(n_layer: int) -> list[str]:
    return [f"present_{kv}_{i}" for i in range(n_layer) for kv in ("key", "value")]


def input_names(n_layer: int) -> list[str]:
    return [INPUT_IDS, POSITION_IDS, ATTN_BIAS, *past_names(n_layer)]


def output_names(n_layer: int) -> list[str]:
    return [LOGITS, *present_names(n_layer)]


def dims(name: str) -> list[str | None]:
    """The named (dynamic) dimensions of an input or output; None where the model fixes the size."""
    if name in (INPUT_IDS, POSITION_IDS):
        return [BATCH, NEW_TOKENS]
    if name == ATTN_BIAS:
        return [BATCH, None, NEW_TOKENS, TOTAL_LENGTH]
    if name == LOGITS:
        return [BATCH, NEW_TOKENS, None]
    if name.startswith("past_"):
        return [BATCH, None, PAST_LENGTH, None]
    if name.startswith("present_"):
        return [BATCH, None, TOTAL_LENGTH, None]
    raise KeyError(f"{name!r} is not an input or output of the step graph")


def attention_bias(pads: np.ndarray, past_len: int, new: int) -> np.ndarray:
    """[B, 1, new, past_len+new]: a query sees non-padding keys up to its own position. Row b's first pads[b] cache
    slots are left padding."""
    S = past_len + new
    k = np.arange(S)[None, None, :]
    q = past_len + np.arange(new)[None, :, None]
    ok = (k <= q) & (k >= pads[:, None, None])
    return np.where(ok, 0.0, MASKED).astype(np.float32)[:, None]


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

    def empty_past(self, batch: int, dtype=np.float32) -> list[np.ndarray]:
        """Every layer's keys and values with no tokens in them (a prefill's past)."""
        z = np.zeros((batch, self.n_head, 0, self.head_dim), dtype=dtype)
        return [z] * (2 * self.n_layer)


@runtime_checkable
class StepRunner(Protocol):
    """A backend that runs the step: the generation loop (gptzoo.zoo.generate) needs nothing else."""

    shape: GraphShape
    provider: str  # where it runs, e.g. "CPUExecutionProvider" or "torch"
    dtype: type  # of the cache it returns (np.float32)

    def empty_past(self, batch: int) -> list[np.ndarray]: ...

    def step(
        self, ids: np.ndarray, positions: np.ndarray, bias: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits [B, T, V] for new tokens `ids` [B, T] and the grown cache (every layer's keys and values)."""
        ...
