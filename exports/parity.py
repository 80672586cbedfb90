"""Parity of an exported graph with the torch model it came from; run on every export, figures go in the card.

1. logits: a prefill and up to 32 cached decode steps at batch 1 and 3, max |onnxruntime - torch| (fp32 gate 1e-4);
2. tokens: a 300-token greedy generation that runs past block_size, onnxruntime (exact policy) vs nanoGPT's
   cache-free `generate(top_k=1)` in torch: every token must be identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gptzoo.zoo.generate import Batch, attention_bias
from gptzoo.zoo.model import GPT
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams

LOGIT_TOLERANCE = 1e-4
GREEDY_TOKENS = 300
DECODE_STEPS = 32


class ParityError(Exception):
    def __init__(self, figures: dict):
        self.figures = figures
        super().__init__(
            f"exported model does not match the torch model: max |Δlogits| {figures['max_abs_logit_diff']:.3g} "
            f"(limit {LOGIT_TOLERANCE:g}), greedy tokens identical for {figures['greedy_tokens_identical']} of "
            f"{figures['greedy_tokens']}; nothing was written"
        )


class _NoText:
    """Parity compares token ids only."""

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b""


def logit_diff(model: GPT, onnx: OnnxModel, batch: int, seed: int = 0) -> float:
    c = model.config
    prefill = min(8, c.block_size // 2)
    steps = min(DECODE_STEPS, c.block_size - prefill)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, c.vocab_size, (batch, prefill + steps), generator=g)
    worst = 0.0
    past_t, past_o, done = model.empty_cache(batch), onnx.empty_past(batch), 0
    with torch.no_grad():
        for T in [prefill] + [1] * steps:
            chunk = ids[:, done : done + T]
            ref, past_t = model.forward_cached(chunk, past_t)
            pos = np.broadcast_to(np.arange(done, done + T), (batch, T)).copy()
            got, past_o = onnx.step(chunk.numpy(), pos, attention_bias(np.zeros(batch, int), done, T), past_o)
            worst = max(worst, float(np.abs(got - ref.numpy()).max()))
            done += T
    return worst


def greedy_agreement(model: GPT, onnx: OnnxModel, n_tokens: int = GREEDY_TOKENS, seed: int = 0) -> int:
    """How many of the first n_tokens greedy tokens match before the first difference."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, model.config.vocab_size, (1, 5), generator=g)
    with torch.no_grad():
        ref = model.generate(prompt, n_tokens, temperature=1.0, top_k=1)[0, 5:].tolist()
    batch = Batch(onnx, _NoText(), policy="exact")
    row = batch.new_row(prompt[0].tolist(), SamplingParams(max_tokens=n_tokens, temperature=0.0))
    batch.add([row])
    while not row.done:
        batch.step()
    same = 0
    for a, b in zip(ref, row.generated, strict=True):
        if a != b:
            break
        same += 1
    return same


def check_parity(model: GPT, onnx_path: Path, tolerance: float = LOGIT_TOLERANCE, exact_tokens: bool = True) -> dict:
    onnx = OnnxModel(onnx_path, device="cpu")
    model = model.eval()
    diffs = {f"batch_{b}": logit_diff(model, onnx, b) for b in (1, 3)}
    worst = max(diffs.values())
    same = greedy_agreement(model, onnx)
    return {
        "max_abs_logit_diff": worst,
        "max_abs_logit_diff_by_batch": diffs,
        "logit_tolerance": tolerance,
        "decode_steps": min(DECODE_STEPS, model.config.block_size - min(8, model.config.block_size // 2)),
        "greedy_tokens": GREEDY_TOKENS,
        "greedy_tokens_identical": same,
        "passed": worst <= tolerance and (same == GREEDY_TOKENS or not exact_tokens),
    }
