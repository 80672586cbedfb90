"""The module that is exported to ONNX: the zoo's GPT rewritten as one step with an explicit KV cache.

Inputs (batch B, new tokens T, past length P, all dynamic):
    input_ids     int64 [B, T]
    position_ids  int64 [B, T]          absolute positions; per row, so left-padded rows line up
    attn_bias     float [B, 1, T, P+T]  0 where a query may attend, -inf (a large negative) elsewhere
    past_key_i, past_value_i  float [B, n_head, P, head_dim] for every layer i (P may be 0)
Outputs:
    logits        float [B, T, vocab]
    present_key_i, present_value_i  float [B, n_head, P+T, head_dim]

The caller (gptzoo.server.engine) builds positions and the mask, which keeps the graph free of shape arithmetic and
lets one graph serve prefill, decode, chunked prefill and batches of rows with different lengths. Attention is
written out (matmul, add, softmax) because it exports to a smaller graph than scaled_dot_product_attention.
"""

from __future__ import annotations

import numpy as np
import torch

from gptzoo.zoo.generate import attention_bias
from gptzoo.zoo.kv_step import CachedStep
from gptzoo.zoo.model import GPT

__all__ = ["CachedStep", "example_inputs", "input_names", "output_names"]


def input_names(n_layer: int) -> list[str]:
    names = ["input_ids", "position_ids", "attn_bias"]
    for i in range(n_layer):
        names += [f"past_key_{i}", f"past_value_{i}"]
    return names


def output_names(n_layer: int) -> list[str]:
    names = ["logits"]
    for i in range(n_layer):
        names += [f"present_key_{i}", f"present_value_{i}"]
    return names


def example_inputs(model: GPT, batch: int = 2, new: int = 3, past: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs for tracing; every dynamic dimension >= 2 so none is specialised to 0 or 1."""
    c = model.config
    ids = torch.randint(0, c.vocab_size, (batch, new))
    pos = (torch.arange(new) + past).expand(batch, new).contiguous()
    bias = torch.from_numpy(attention_bias(np.zeros(batch, int), past, new))
    kv = [torch.zeros(batch, c.n_head, past, c.head_dim) for _ in range(2 * c.n_layer)]
    return (ids, pos, bias, *kv)
