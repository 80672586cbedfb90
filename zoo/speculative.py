"""Speculative decoding within the zoo: a shallow variant drafts, a deep one verifies (Leviathan et al. 2023).

Each round the draft proposes k tokens, one cheap step each, from its own slot cache; the target scores the last
accepted token and all k proposals in one call (k + 1 new tokens on its slot cache) and keeps the longest prefix it
agrees with, plus one token of its own: the first it disagrees on, or one more when it agreed with all. At
temperature 0 "agree" means the target's argmax, so the text is the target's own greedy text. Above it, proposal i is
kept with probability min(1, p(x)/q(x)) and a rejected one is replaced by a draw from max(0, p - q), normalised,
where p and q are the target's and the draft's distributions after temperature, top-k and top-p: the output then
follows the target's sampling distribution exactly. Rolling back a rejected tail costs nothing: a slot's length is
just a number (gptzoo.zoo.step_contract), and what lies beyond it is overwritten before it is read.

Both models see the same windows (the `half` context policy: when the target's window is full, the last half window
is prefilled again, in both models), so greedy output is the target's output without a draft.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.generate import Result, Row, StopText
from gptzoo.zoo.sampling import SamplingParams, draw, logits_to_probs, sample
from gptzoo.zoo.step_contract import Call, StepRunner
from gptzoo.zoo.tokenizers import Tokenizer

MAX_DRAFT_TOKENS = 16


@dataclass
class SpecStats:
    target_calls: int = 0  # verification calls (and prefills) of the target
    drafted: int = 0  # tokens the draft proposed
    accepted: int = 0  # of which the target kept

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


@dataclass
class _Side:
    """One model's view of the row: its cache holds context[start : start + cached] at positions 0 .. cached-1."""

    model: StepRunner
    cache: object = None
    cached: int = 0
    start: int = 0

    def feed(self, context: list[int], upto: int, last: int = 1) -> np.ndarray:
        """Write context[start + cached : upto] into the cache (one call); the logits of its `last` tokens [last, V]."""
        tokens = context[self.start + self.cached : upto]
        call = Call.fill(0, [tokens], [self.cached], wanted=list(range(len(tokens) - last, len(tokens))))
        logits = self.model.run(self.cache, call)[0]
        self.cached += len(tokens)
        return logits


def check_pair(target: StepRunner, draft: StepRunner, k: int) -> None:
    """Refusals before any work: the draft must read and write the target's tokens and windows."""
    if not 1 <= k <= MAX_DRAFT_TOKENS:
        raise BadValue(f"--draft-tokens must be within 1..{MAX_DRAFT_TOKENS}, got {k}")
    t, d = target.shape, draft.shape
    if t.vocab_size != d.vocab_size:
        raise BadValue(f"the draft's vocabulary ({d.vocab_size} tokens) is not the target's ({t.vocab_size})")
    if d.block_size < t.block_size:
        raise BadValue(f"the draft's window ({d.block_size} tokens) is shorter than the target's ({t.block_size})")


def generate(target: StepRunner, draft: StepRunner, tokenizer: Tokenizer, prompt: str, params: SamplingParams,
             k: int = 4, on_text: Callable[[str], None] | None = None) -> tuple[Result, SpecStats]:
    """One completion of `prompt` by `target`, drafted `k` tokens at a time by `draft` (same tokenizer)."""
    check_pair(target, draft, k)
    block = target.shape.block_size
    ids = tokenizer.encode(prompt)
    if not ids:
        raise BadValue("the prompt is empty")
    context = ids[-block:]
    row = Row(list(context), params, StopText(tokenizer, params.stop), np.random.default_rng(params.seed),
              on_text=on_text)
    rng, stats = row.rng, SpecStats()
    tgt, drf = _Side(target, target.new_cache(1)), _Side(draft, draft.new_cache(1))

    def emit(tokens: list[int]) -> bool:
        """The tokens join the row (up to its end); True once it is finished."""
        for token in tokens:
            row.take(token)
            context.append(token)
            if row.done:
                return True
        return False

    # The prompt's last token is treated as just sampled: the first round drafts the first tokens too, and each model
    # writes the prompt in its first call.
    done = False
    while not done:
        last = len(context) - 1  # context[last] is the newest token, in neither cache
        if last - tgt.start >= block:  # the target's window is full: half of it again, in both models (`half`)
            tgt.start = drf.start = last - block // 2
            tgt.cached = drf.cached = 0
        room = block - 1 - (last - tgt.start)  # proposals that still fit in the window after context[last]
        n = min(k, room, params.max_tokens - len(row.generated))
        if n <= 0:  # no room to draft: a plain step of the target
            stats.target_calls += 1
            done = emit([sample(tgt.feed(context, last + 1)[-1], params, rng)])
            continue
        # the draft proposes n tokens, each from its distribution q
        proposals, qs = [], []
        logits = drf.feed(context, last + 1)[-1]
        for i in range(n):
            q = _probs(logits, params)
            token = int(np.argmax(q)) if params.temperature == 0 else draw(q, rng)
            proposals.append(token)
            qs.append(q)
            if i + 1 < n:
                logits = drf.feed(context + proposals, last + 2 + i)[-1]
        stats.drafted += n
        # the target scores context[last] and the proposals in one call: n + 1 rows of logits
        stats.target_calls += 1
        verify = tgt.feed(context + proposals, last + 1 + n, last=n + 1)
        kept, extra = _verify(verify, proposals, qs, params, rng)
        stats.accepted += len(kept)
        tgt.cached -= n - len(kept)  # roll back the rejected tail (its keys/values get overwritten)
        drf.cached = min(drf.cached, last + 1 + len(kept) - drf.start)
        done = emit(kept + [extra])
    return Result(row.text.text, row.generated, row.finish_reason, len(row.prompt)), stats


def _probs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    if params.temperature == 0:
        p = np.zeros(logits.size)
        p[int(np.argmax(logits))] = 1.0
        return p
    return logits_to_probs(logits, params.temperature, params.top_k, params.top_p)


def _verify(logits: np.ndarray, proposals: list[int], qs: list[np.ndarray], params: SamplingParams,
            rng: np.random.Generator) -> tuple[list[int], int]:
    """The proposals the target keeps, and its own next token (a correction, or one more if it kept them all)."""
    kept = []
    for i, (token, q) in enumerate(zip(proposals, qs, strict=True)):
        p = _probs(logits[i], params)
        if params.temperature == 0:
            if token != int(np.argmax(p)):
                return kept, int(np.argmax(p))
        elif rng.random() >= min(1.0, p[token] / q[token]):  # rejected: draw from what p has beyond q
            residual = np.maximum(p - q, 0.0)
            total = residual.sum()
            return kept, draw(residual / total, rng) if total > 0 else draw(p, rng)
        kept.append(token)
    return kept, sample(logits[len(proposals)], params, rng)
