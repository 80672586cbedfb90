"""The cached step in torch: `CachedStep`, the module exported to ONNX, and `TorchModel`, which runs it directly as
the torch backend of generation. Both are thin: the transformer is GPT.hidden_states, the code that was trained; the
graph contract (names, shapes, slots, bias) is gptzoo.zoo.step_contract."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from gptzoo.zoo.model import GPT, KVCache
from gptzoo.zoo.oss import OSS
from gptzoo.zoo.oss_step import cached_hidden_states
from gptzoo.zoo.step_contract import Call, GraphShape


def pair_up(flat: tuple[torch.Tensor, ...]) -> list[KVCache]:
    """(key_0, value_0, key_1, value_1, …) -> [(key_0, value_0), (key_1, value_1), …]"""
    return list(zip(flat[0::2], flat[1::2], strict=True))


def flatten(cache: list[KVCache]) -> list[torch.Tensor]:
    return [t for kv in cache for t in kv]


# The exports that read gpt2's tensor names (GGUF, Hugging Face folders) refuse the oss block with this.
OSS_NOT_YET = ("this variant uses the oss block, which exports to ONNX, generates and serves but has no GGUF or "
               "Hugging Face export (docs/oss.md)")


class CachedStep(nn.Module):
    """GPT.hidden_states with the cache as flat positional tensors, because a graph's inputs and outputs are flat
    (input_ids, position_ids, seqlens_k, total_length, logits_index, past_key_0, past_value_0, … -> logits,
    present_key_0, …), and only the wanted positions through the output head (a prefill needs one row of logits,
    not one per prompt token)."""

    def __init__(self, model: GPT | OSS):
        super().__init__()
        self.gpt = model.eval()

    def forward(self, input_ids, position_ids, seqlens_k, total_length, logits_index, *past):
        lengths = (seqlens_k, total_length)
        if isinstance(self.gpt, OSS):  # the oss block's step (gptzoo.zoo.oss_step): GQA slots, RoPE, window, sinks
            x, presents = cached_hidden_states(self.gpt, input_ids, position_ids, pair_up(past), lengths)
        else:
            x, presents = self.gpt.hidden_states(input_ids, position_ids, pair_up(past), lengths)
        x = torch.gather(x, 1, logits_index.unsqueeze(-1).expand(-1, -1, x.size(-1)))
        return (self.gpt.lm_head(x), *flatten(presents))


class TorchModel:
    """The step run by torch on a checkpoint's model, a gptzoo.zoo.step_contract.StepRunner like the onnxruntime
    backend: lets the generation loop compare backends (`gptzoo generate --backend torch`, `gptzoo bench`) and the
    export's parity check compare the graph with the torch model. Its cache is a list of torch tensors; the written
    slots are copied back into it (a reference backend, not the fast path)."""

    provider = "torch"

    def __init__(self, model: GPT | OSS):
        self.step_module = CachedStep(model)
        self.shape = GraphShape.of(model.config)

    def new_cache(self, slots: int, length: int | None = None) -> list[torch.Tensor]:
        return [torch.zeros(self.shape.slot_shape(slots, length)) for _ in range(self.shape.cache_tensors)]

    @torch.inference_mode()
    def run(self, cache: list[torch.Tensor], call: Call) -> np.ndarray:
        rows = slice(call.first, call.first + call.rows)
        inputs = (call.ids, call.positions, call.seqlens_k, call.total_length, call.logits_index)
        out = self.step_module(*(torch.from_numpy(a) for a in inputs), *(c[rows] for c in cache))
        for c, written in zip(cache, out[1:], strict=True):
            c[rows] = written
        return out[0].numpy()

    def decode(self, cache: list[torch.Tensor], first: int, tokens: np.ndarray, starts: np.ndarray,
               offsets: np.ndarray | None = None) -> np.ndarray:
        # a full slot (an idle row's length may be block_size) feeds from position 0: its length is past the table
        starts = np.asarray(starts, np.int64)
        live = starts < self.shape.block_size
        offsets = None if offsets is None else np.asarray(offsets, np.int64)
        return self.run(cache, Call.decode(first, np.asarray(tokens), starts, live, offsets))[:, 0]

    def extend(self, cache: list[torch.Tensor], slot: int, tokens: list[int], start: int, wanted: int,
               offset: int = 0) -> np.ndarray:
        return self.run(cache, Call.fill(slot, [tokens], [start], wanted=list(range(len(tokens) - wanted,
                                                                                     len(tokens))),
                                         offsets=[offset]))[0]

    def move(self, cache: list[torch.Tensor], slot: int, src: int, n: int) -> None:
        """Columns src .. src + n - 1 of `slot` to columns 0 .. n - 1 in every layer (the `slide` policy)."""
        for c in cache:
            c[slot, :, :n] = c[slot, :, src : src + n].clone()  # the ranges may overlap
