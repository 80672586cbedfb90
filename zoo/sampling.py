"""Sampling over rows of logits (numpy), in the spirit of gpt-fast's generate.py.

`sample` (one row) is the reference; `sample_rows` does a whole batch in a few array operations per step and gives
exactly the same token for every row: each row draws exactly one uniform from its own Generator per token, so a
row's text with a given seed does not depend on what else shares its batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gptzoo.zoo.errors import BadValue

# Below this temperature sampling is greedy: logits / 1e-308 overflow to inf and the probabilities to NaN, while
# any temperature this small already puts all the mass on the top token.
GREEDY_BELOW = 1e-4
# float64 elements per block of rows in `sample_rows` (256 KiB: the temporaries of a block stay in L2)
CACHE_ELEMENTS = 32_768


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
    hence its text) does not depend on anything else in its batch. The reference for `sample_rows`."""
    if params.temperature == 0:
        return int(np.argmax(logits))
    return draw(logits_to_probs(logits, params.temperature, params.top_k, params.top_p), rng)


def draw(p: np.ndarray, rng: np.random.Generator) -> int:
    """One token id from probabilities `p`, with one uniform draw from `rng`."""
    return int(min(np.searchsorted(np.cumsum(p), rng.random(), side="right"), p.size - 1))


def sample_rows(logits: np.ndarray, params: Sequence[SamplingParams], rngs: Sequence[np.random.Generator]) -> list[int]:
    """One token id per row of `logits` [N, V], row i sampled with params[i] and rngs[i]: the same tokens as
    `sample` row by row (the same float64 operations, row-wise), at a per-step rather than a per-row cost wherever
    the per-row Python is the cost (vocabularies up to CACHE_ELEMENTS / 2 tokens)."""
    n, vocab = logits.shape
    if n == 1 or 2 * vocab > CACHE_ELEMENTS:
        # one row, or rows so long that each one's passes over memory dwarf the per-row Python: the reference
        return [sample(logits[i], params[i], rngs[i]) for i in range(n)]
    hot = [i for i, p in enumerate(params) if p.temperature]
    if len(hot) < n:
        out = np.argmax(logits, axis=1)  # the greedy rows' tokens (the others are overwritten below)
        if not hot:
            return out.tolist()
    else:
        out = np.empty(n, dtype=np.int64)
    u = np.array([rngs[i].random() for i in hot])  # exactly one draw per row and token, from the row's own stream
    # Blocks of rows whose float64 temporaries stay in cache: with a small vocabulary that is every row at once.
    per_block = CACHE_ELEMENTS // vocab
    for a in range(0, len(hot), per_block):
        rows = hot[a : a + per_block]
        p = _probs_rows(logits if len(rows) == n else logits[rows], [params[i] for i in rows])
        # searchsorted(cumsum, u, side="right") row-wise: the count of cumulative sums <= u (they never decrease)
        drawn = (np.cumsum(p, axis=1) <= u[a : a + per_block, None]).sum(axis=1)
        out[rows] = np.minimum(drawn, vocab - 1)
    return out.tolist()


def _probs_rows(logits: np.ndarray, params: list[SamplingParams]) -> np.ndarray:
    """`logits_to_probs` for rows with their own temperature, top_k and top_p: rows sharing a top_k are partitioned
    together (np.partition takes one kth), the top-p rows are sorted together."""
    vocab = logits.shape[1]
    temps = np.array([[p.temperature] for p in params])
    z = np.divide(logits, temps, dtype=np.float64)  # as astype(float64) then divide, in one pass
    for k in {p.top_k for p in params if p.top_k is not None and p.top_k < vocab}:
        rows = [i for i, p in enumerate(params) if p.top_k == k]
        zk = z[rows]
        kth = np.partition(zk, vocab - k, axis=1)[:, vocab - k, None]
        z[rows] = np.where(zk < kth, -np.inf, zk)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z, out=z)
    p /= p.sum(axis=1, keepdims=True)
    nucleus = [i for i, sp in enumerate(params) if sp.top_p is not None and sp.top_p < 1.0]
    if nucleus:
        q = p[nucleus]
        top_p = np.array([[params[i].top_p] for i in nucleus])
        order = np.argsort(-q, axis=1, kind="stable")
        cum = np.cumsum(np.take_along_axis(q, order, axis=1), axis=1)
        kept = (cum < top_p).sum(axis=1, keepdims=True) + 1  # searchsorted(cum, top_p) + 1: the smallest prefix
        mask = np.empty(q.shape, dtype=bool)
        np.put_along_axis(mask, order, np.arange(vocab) < kept, axis=1)
        q = np.where(mask, q, 0.0)
        q /= q.sum(axis=1, keepdims=True)
        p[nucleus] = q
    return p
