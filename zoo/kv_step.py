"""The zoo's GPT as one cached step with explicit positions and attention bias: the module exported to ONNX
(see gptzoo.exports.graph for the graph contract) and, run directly, the torch backend of generation."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from gptzoo.zoo.model import GPT


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


class TorchModel:
    """The same `step` interface as gptzoo.zoo.runtime.OnnxModel, run by torch on a checkpoint's model: lets the
    generation loop compare backends (`gptzoo generate --backend torch`, `gptzoo bench`)."""

    provider = "torch"

    def __init__(self, model: GPT):
        from gptzoo.zoo.runtime import GraphShape

        c = model.config
        self.step_module = CachedStep(model)
        self.shape = GraphShape(c.n_layer, c.n_head, c.head_dim, c.block_size, c.vocab_size)
        self.dtype = np.float32

    def empty_past(self, batch: int) -> list[np.ndarray]:
        s = self.shape
        return [np.zeros((batch, s.n_head, 0, s.head_dim), dtype=np.float32)] * (2 * s.n_layer)

    @torch.inference_mode()
    def step(self, ids, positions, bias, past):
        out = self.step_module(torch.from_numpy(ids), torch.from_numpy(positions), torch.from_numpy(bias),
                               *(torch.from_numpy(p) for p in past))
        return out[0].numpy(), [t.numpy() for t in out[1:]]
