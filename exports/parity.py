"""Parity of an exported graph with the torch model it came from; run on every export, figures go in the card.

1. logits: a prefill and up to 32 cached decode steps at batch 1 and 3 (in slots that are not the first of their
   cache), max |onnxruntime - torch| (fp32 gate 1e-4), where torch runs the same cached step
   (gptzoo.zoo.kv_step.TorchModel) through the forward that was trained;
2. tokens: a 300-token greedy generation that runs past block_size, onnxruntime (exact policy) vs nanoGPT's
   cache-free `generate(top_k=1)` in torch: every token must be identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gptzoo.zoo.errors import GptzooError
from gptzoo.zoo.generate import Batch
from gptzoo.zoo.kv_step import TorchModel
from gptzoo.zoo.model import GPT
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.step_contract import Call, StepRunner

LOGIT_TOLERANCE = 1e-4
GREEDY_TOKENS = 300
DECODE_STEPS = 32


class ParityError(GptzooError):
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


def logit_diff(model: GPT, onnx: StepRunner, batch: int, seed: int = 0) -> float:
    """Max |Δlogits| of the exported graph and the torch model, fed the same prefill and cached decode steps."""
    return step_diff(TorchModel(model), onnx, batch, seed)


def step_diff(reference: StepRunner, candidate: StepRunner, batch: int, seed: int = 0) -> float:
    """Max |Δlogits| of two backends of the step fed the same prefill and cached decode steps, each on its own
    cache. The rows sit in slots 1.. of a cache with one more slot, so a call that wrote outside its slots (or read
    a neighbour's) would show."""
    s = reference.shape
    prefill = min(8, s.block_size // 2)
    steps = min(DECODE_STEPS, s.block_size - prefill)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, s.vocab_size, (batch, prefill + steps), generator=g).numpy()
    worst = 0.0
    caches = reference.new_cache(batch + 1), candidate.new_cache(batch + 1)
    everyone = np.ones(batch, bool)
    calls = [Call.fill(1, ids[:, :prefill], np.zeros(batch, np.int64))]
    calls += [Call.decode(1, ids[:, i], np.full(batch, i), everyone) for i in range(prefill, prefill + steps)]
    for call in calls:
        want = reference.run(caches[0], call)
        got = candidate.run(caches[1], call)
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def greedy_agreement(model: GPT, onnx: StepRunner, n_tokens: int = GREEDY_TOKENS, seed: int = 0) -> int:
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
