"""The cached step in torch: `CachedStep`, the module exported to ONNX, and `TorchModel`, which runs it directly as
the torch backend of generation. Both are thin: the transformer is GPT.hidden_states, the code that was trained; the
graph contract (names, shapes, bias) is gptzoo.zoo.step_contract."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from gptzoo.zoo.model import GPT, KVCache
from gptzoo.zoo.step_contract import GraphShape


def pair_up(flat: tuple[torch.Tensor, ...]) -> list[KVCache]:
    """(key_0, value_0, key_1, value_1, …) -> [(key_0, value_0), (key_1, value_1), …]"""
    return list(zip(flat[0::2], flat[1::2], strict=True))


def flatten(cache: list[KVCache]) -> list[torch.Tensor]:
    return [t for kv in cache for t in kv]


class CachedStep(nn.Module):
    """GPT.hidden_states with the cache as flat positional tensors, because a graph's inputs and outputs are flat
    (input_ids, position_ids, attn_bias, past_key_0, past_value_0, … -> logits, present_key_0, …)."""

    def __init__(self, model: GPT):
        super().__init__()
        self.gpt = model.eval()

    def forward(self, input_ids, position_ids, attn_bias, *past):
        x, presents = self.gpt.hidden_states(input_ids, position_ids, attn_bias, pair_up(past))
        return (self.gpt.lm_head(x), *flatten(presents))


class TorchModel:
    """The step run by torch on a checkpoint's model, a gptzoo.zoo.step_contract.StepRunner like the onnxruntime
    backend: lets the generation loop compare backends (`gptzoo generate --backend torch`, `gptzoo bench`) and the
    export's parity check compare the graph with the torch model."""

    provider = "torch"

    def __init__(self, model: GPT):
        self.step_module = CachedStep(model)
        self.shape = GraphShape.of(model.config)
        self.dtype = np.float32

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return self.shape.empty_past(batch, self.dtype)

    @torch.inference_mode()
    def step(
        self, ids: np.ndarray, positions: np.ndarray, bias: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        out = self.step_module(*(torch.from_numpy(a) for a in (ids, positions, bias, *past)))
        return out[0].numpy(), [t.numpy() for t in out[1:]]
