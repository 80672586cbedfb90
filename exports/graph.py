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

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from gptzoo.zoo.model import GPT


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


class CachedStep(nn.Module):
    def __init__(self, model: GPT):
        super().__init__()
        self.gpt = model.eval()
        c = model.config
        self.n_head, self.n_embd, self.scale = c.n_head, c.n_embd, 1.0 / math.sqrt(c.head_dim)

    def forward(self, input_ids, position_ids, attn_bias, *past):
        t = self.gpt.transformer
        B, T = input_ids.shape
        x = t.wte(input_ids) + t.wpe(position_ids)
        presents = []
        for i, block in enumerate(t.h):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).split(self.n_embd, dim=2)
            q, k, v = (z.reshape(B, T, self.n_head, -1).transpose(1, 2) for z in (q, k, v))
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            att = torch.softmax((q @ k.transpose(-2, -1)) * self.scale + attn_bias, dim=-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, self.n_embd)
            x = x + attn.c_proj(y)
            x = x + block.mlp.c_proj(F.gelu(block.mlp.c_fc(block.ln_2(x))))
            presents += [k, v]
        return (self.gpt.lm_head(t.ln_f(x)), *presents)


def example_inputs(model: GPT, batch: int = 2, new: int = 3, past: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs for tracing; every dynamic dimension >= 2 so none is specialised to 0 or 1."""
    c = model.config
    ids = torch.randint(0, c.vocab_size, (batch, new))
    pos = (torch.arange(new) + past).expand(batch, new).contiguous()
    bias = causal_bias(batch, new, past)
    kv = [torch.zeros(batch, c.n_head, past, c.head_dim) for _ in range(2 * c.n_layer)]
    return (ids, pos, bias, *kv)


def causal_bias(batch: int, new: int, past: int) -> torch.Tensor:
    q = torch.arange(new)[:, None] + past
    k = torch.arange(past + new)[None, :]
    bias = torch.where(k <= q, 0.0, torch.finfo(torch.float32).min)
    return bias.expand(batch, 1, new, past + new).contiguous()
