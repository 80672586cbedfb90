"""Sampling: small pure functions over one row of logits (numpy), in the spirit of gpt-fast's generate.py."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gptzoo.zoo.errors import BadValue

# Below this temperature sampling is greedy: logits / 1e-308 overflow to inf and the probabilities to NaN, while
# any temperature this small already puts all the mass on the top token.
GREEDY_BELOW = 1e-4


@dataclass
class SamplingParams:
    max_tokens: int = 256  # tokens to generate at most
    temperature: float = 1.0  # 0 (or anything below GREEDY_BELOW) means greedy (argmax)
    top_k: int | None = None  # keep only the k most likely tokens
    top_p: float | None = None  # keep the smallest set of tokens whose probability reaches p (nucleus)
    seed: int | None = None  # same seed, same prompt, same model -> same text
    stop: list[str] = field(default_factory=list)  # generation ends before the first occurrence of any of these

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise BadValue(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise BadValue(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.temperature < GREEDY_BELOW:
            self.temperature = 0.0
        if self.top_k is not None and self.top_k < 1:
            raise BadValue(f"top_k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise BadValue(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise BadValue("stop sequences must not be empty")


def logits_to_probs(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None) -> np.ndarray:
    """Probabilities after temperature, top-k and top-p filtering (float64 for a stable cumulative sum)."""
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, top_p)) + 1]  # the smallest prefix reaching top_p
        mask = np.zeros_like(p, dtype=bool)
        mask[keep] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return p


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """One token id from one row of logits. Exactly one uniform draw per token, so a row's random stream (and
    hence its text) does not depend on anything else in its batch."""
    if params.temperature == 0:
        return int(np.argmax(logits))
    p = logits_to_probs(logits, params.temperature, params.top_k, params.top_p)
    u = rng.random()
    return int(min(np.searchsorted(np.cumsum(p), u, side="right"), p.size - 1))
