"""Speculative decoding within the zoo: a shallow variant drafts, a deep one verifies (Leviathan et al. 2023).

The engine is gptzoo.zoo.generate's `Batch` given a `Draft`; this module holds the rules it follows, as small pure
functions, and `generate`, one completion drafted.

Each round a row's draft proposes up to k tokens, one cheap step each, from its own slot cache; the target scores
the row's newest token and all proposals in one call (k + 1 new tokens on its slot) and keeps the longest prefix it
agrees with, plus one token of its own: the first it disagrees on, or one more when it agreed with all. At
temperature 0 "agree" means the target's argmax, so the text is the target's own greedy text. Above it, proposal i is
kept with probability min(1, p(x)/q(x)) and a rejected one is replaced by a draw from max(0, p - q), normalised,
where p and q are the target's and the draft's distributions after temperature, top-k and top-p: the output then
follows the target's sampling distribution exactly, however many tokens were proposed. Rolling back a rejected tail
costs nothing: a slot's length is just a number (gptzoo.zoo.step_contract), and what lies beyond it is overwritten
before it is read. Both models see the target's windows (the `half` context policy), so greedy output is the
target's output without a draft.

How many tokens a row drafts (`Draft.adaptive`):
- a round stops after a proposal the draft itself gives less than `confidence` probability, or at k: the draft knows
  when it guesses (at width 128, 1 layer drafting 12: the target keeps 99% of the proposals the draft gives more than
  0.5, 58% of the others);
- a row drafts while what its rounds made, tokens per unit of target time (kept + 1) / (1 + c · proposed) with c a
  drafted token's cost (a draft step and one more verified token) in target steps, beats what a batched decode step
  makes (n rows for 1 + (n - 1) · row_cost): so it stops drafting when the draft guesses badly, and when enough rows
  decode together, since on the CPU each drafting row is verified in a call of its own (gptzoo.zoo.step_contract:
  one row per call feeding more than one token) while one more row in the batched call costs little. A row that its
  own rounds stopped drafts a round again every RETRY steps (the text may have become easier to guess), as long as
  the batch is small enough that a row believed as good as the prior would draft.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.sampling import SamplingParams, draw, logits_to_probs, sample
from gptzoo.zoo.step_contract import StepRunner
from gptzoo.zoo.tokenizers import Tokenizer

if TYPE_CHECKING:
    from gptzoo.zoo.generate import Result

MAX_DRAFT_TOKENS = 16
WEIGHT = 1 / 4  # of a round in a row's running gain
RETRY = 16  # steps a row whose own rounds stopped it waits before drafting a round again, to see


@dataclass(frozen=True)
class Draft:
    """A draft model for a Batch, and how it drafts. Costs are relative to a one-token, one-row call of the target;
    the defaults were measured on one CPU thread at width 128 (docs/benchmarks.md, "Speculative decoding")."""

    model: StepRunner
    k: int = 4  # the most tokens proposed per round
    adaptive: bool = True  # False: always k (the window and max_tokens permitting), whatever it gains
    confidence: float = 0.5  # a round stops after a proposal the draft gives less probability than this
    prior: float = 1.5  # tokens per unit of target time assumed for a row that has not drafted yet
    token_cost: float = 0.15  # one more token in a target call (a verification)
    row_cost: float = 0.15  # one more row in a batched target decode call
    step_cost: float | None = None  # one draft step; None: (draft layers + 1) / (target layers + 1)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_DRAFT_TOKENS:
            raise BadValue(f"draft tokens per round must be within 1..{MAX_DRAFT_TOKENS}, got {self.k}")

    def drafted_token_cost(self, target: StepRunner) -> float:
        """A drafted token's cost in target steps: a draft step and one more token in the verification."""
        step = self.step_cost
        if step is None:  # a step is the layers and about one layer's worth of embedding, head and call overhead
            step = (self.model.shape.n_layer + 1) / (target.shape.n_layer + 1)
        return step + self.token_cost


def check_pair(target: StepRunner, draft: StepRunner) -> None:
    """Refusals before any work: the draft must read and write the target's tokens and windows."""
    t, d = target.shape, draft.shape
    if t.vocab_size != d.vocab_size:
        raise BadValue(f"the draft's vocabulary ({d.vocab_size} tokens) is not the target's ({t.vocab_size})")
    if d.block_size < t.block_size:
        raise BadValue(f"the draft's window ({d.block_size} tokens) is shorter than the target's ({t.block_size})")


def check_variants(target, draft) -> str | None:
    """Refusals of a store variant as another's draft, before anything is loaded (`generate --draft`, the server's
    drafts): BadValue for a draft that cannot draft; a warning for one that will rarely save time; else None."""
    if draft.id == target.id:
        raise BadValue(f"{draft.id} is the target itself: pick a shallower variant")
    if draft.card.tokenizer != target.card.tokenizer or draft.card.vocab_size != target.card.vocab_size:
        raise BadValue(f"{draft.id} cannot draft for {target.id}: another tokenizer or vocabulary")
    if not draft.exported:
        raise BadValue(f"{draft.id} is not exported yet: run `gptzoo export --model {draft.id}`")
    if draft.n_layer >= target.n_layer:
        return (f"the draft {draft.id} ({draft.n_layer} layers) is not shallower than {target.id} "
                f"({target.n_layer}): it will rarely save time")
    return None


def auto_draft(variants, target):
    """The shallowest exported variant shallower than `target` with its tokenizer and dataset, or None."""
    fits = [v for v in variants if v.exported and not v.card.quantization and v.n_layer < target.n_layer
            and v.dataset_name == target.dataset_name and v.card.tokenizer == target.card.tokenizer
            and v.card.vocab_size == target.card.vocab_size]
    return min(fits, key=lambda v: (v.n_layer, v.id), default=None)


# -- whether to draft ---------------------------------------------------------------------------------------------
def batch_rate(rows: int, row_cost: float) -> float:
    """Tokens per unit of target time a batched decode step of `rows` rows makes: what drafting must beat."""
    return rows / (1 + row_cost * (rows - 1))


def round_rate(kept: int, proposed: int, token_cost: float) -> float:
    """Tokens per unit of target time of a round: the kept proposals and the target's own token, for one target
    step and `proposed` drafted tokens."""
    return (kept + 1) / (1 + token_cost * proposed)


def observe(gain: float, kept: int, proposed: int, token_cost: float) -> float:
    """A row's running gain (tokens per unit of target time while drafting) after a round."""
    return gain + WEIGHT * (round_rate(kept, proposed, token_cost) - gain)


# -- proposals and verification -------------------------------------------------------------------------------------
def propose(logits: np.ndarray, params: SamplingParams,
            rng: np.random.Generator) -> tuple[int, float, np.ndarray | None]:
    """The draft's proposal from its logits [V]: the token, the draft's probability of it (its confidence), and
    the distribution q it was drawn from (None at temperature 0, where q is the argmax)."""
    if params.temperature == 0:  # array methods: a numpy function's dispatch costs more than a 65-token argmax
        token = int(logits.argmax())
        return token, 1.0 / float(np.exp(logits - logits[token]).sum()), None
    q = logits_to_probs(logits, params.temperature, params.top_k, params.top_p)
    token = draw(q, rng)
    return token, float(q[token]), q


def accept_greedy(logits: np.ndarray, proposals: list[int]) -> tuple[list[int], int]:
    """The longest prefix of `proposals` that the target's argmax agrees with (logits [k + 1, V]), and the
    target's own next token."""
    best = logits.argmax(axis=1).tolist()
    n = 0
    while n < len(proposals) and proposals[n] == best[n]:
        n += 1
    return proposals[:n], best[n]


def accept(logits: np.ndarray, proposals: list[int], qs: list[np.ndarray], params: SamplingParams,
           rng: np.random.Generator) -> tuple[list[int], int]:
    """At temperature > 0: the proposals the target keeps (each with probability min(1, p/q)), and its own next
    token (a draw from what p has beyond q after a rejection, or from p when it kept them all)."""
    kept = []
    for i, (token, q) in enumerate(zip(proposals, qs, strict=True)):
        p = logits_to_probs(logits[i], params.temperature, params.top_k, params.top_p)
        if rng.random() >= min(1.0, p[token] / q[token]):  # rejected: draw from what p has beyond q
            residual = np.maximum(p - q, 0.0)
            total = residual.sum()
            return kept, draw(residual / total, rng) if total > 0 else draw(p, rng)
        kept.append(token)
    return kept, sample(logits[len(proposals)], params, rng)


# -- one completion ---------------------------------------------------------------------------------------------------
@dataclass
class SpecStats:
    target_calls: int = 0  # calls of the target (prefill, verifications, plain steps)
    drafted: int = 0  # tokens the draft proposed
    accepted: int = 0  # of which the target kept

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def generate(target: StepRunner, draft: StepRunner | Draft, tokenizer: Tokenizer, prompt: str,
             params: SamplingParams, k: int = 4,
             on_text: Callable[[str], None] | None = None) -> tuple[Result, SpecStats]:
    """One completion of `prompt` by `target`, drafted by `draft` (a model: drafting up to `k` tokens a round; or a
    Draft saying how), in a one-row Batch."""
    from gptzoo.zoo.generate import Batch, Result

    batch = Batch(target, tokenizer, "half", slots=1, draft=draft if isinstance(draft, Draft) else Draft(draft, k))
    ids = tokenizer.encode(prompt)
    row = batch.new_row(ids, params, on_text=on_text)
    batch.add([row])
    while not row.done:
        batch.step()
    return (Result(row.text.text, row.generated, row.finish_reason, len(row.prompt)),
            SpecStats(batch.calls, row.drafted, row.accepted))
