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
- a row drafts while what its rounds made, tokens per unit of target time (kept + 1) / (1 + r + c · proposed) with
  r a round's own cost (the verification's multi-token path, the bookkeeping) and c a drafted token's (a draft step
  and one more verified token), both in target steps, beats what a batched decode step makes (n rows for
  1 + (n - 1) · row_cost): so it stops drafting when the draft guesses badly, and when a few rows decode together,
  since on the CPU each drafting row is verified in a call of its own (gptzoo.zoo.step_contract: one row per call
  feeding more than one token). A row that its own rounds stopped drafts TRIAL rounds again after RETRY steps, then
  after twice as many each time it still does not pay (the text may have become easier to guess), as long as the
  batch is small enough that a row believed as good as the prior would draft.
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
CATCH_UP = 16  # most tokens a draft reads to catch up with a row: what drafting needs, a 1-layer step per 8 tokens
SPAN = 16  # rounds a row's gain averages over: one round makes 0.6 to 2 tokens per unit, their mean decides
RETRY = 32  # steps a row whose own rounds stopped it waits before drafting again, to see
MAX_WAIT = 512  # the longest such wait (it doubles while the retries do not pay)
TRIAL = 4  # rounds a retry drafts (and a row at least, before its rounds can stop it): one round says little


@dataclass(frozen=True)
class Draft:
    """A draft model for a Batch, and how it drafts. Costs are relative to a one-token, one-row call of the target;
    the defaults were measured with a 12-layer target at width 128 on one CPU thread (docs/benchmarks.md,
    "Speculative decoding"): shallower targets pay relatively more for a round, wider ones less."""

    model: StepRunner
    k: int = 4  # the most tokens proposed per round
    adaptive: bool = True  # False: always k (the window and max_tokens permitting), whatever it gains
    confidence: float = 0.5  # a round stops after a proposal the draft gives less probability than this
    prior: float = 1.25  # tokens per unit of target time assumed for a row that has not drafted yet
    token_cost: float = 0.2  # one more token in a target call (a verification)
    round_cost: float | None = None  # a round's bookkeeping; None: 2 / (target layers + 1), two layers' worth
    row_cost: float = 0.4  # one more row in a batched target decode call
    step_cost: float | None = None  # one draft step; None: (draft layers + 1) / (target layers + 1)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_DRAFT_TOKENS:
            raise BadValue(f"draft tokens per round must be within 1..{MAX_DRAFT_TOKENS}, got {self.k}")

    def costs(self, target: StepRunner) -> tuple[float, float]:
        """A round's own cost and a drafted token's (a draft step and one more verified token), in target steps.
        A step costs its layers and about one layer's worth of embedding, head and call; a round's Python about two
        (at width 128: wider layers make both smaller)."""
        units = target.shape.n_layer + 1
        step = self.step_cost if self.step_cost is not None else (self.model.shape.n_layer + 1) / units
        return (self.round_cost if self.round_cost is not None else 2 / units), step + self.token_cost


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


def round_rate(kept: int, proposed: int, round_cost: float, token_cost: float) -> float:
    """Tokens per unit of target time of a round: the kept proposals and the target's own token, for one target
    step, the round's own cost and `proposed` drafted tokens."""
    return (kept + 1) / (1 + round_cost + token_cost * proposed)


def gain_ceiling(k: int, prior: float, round_cost: float, token_cost: float) -> float:
    """The most tokens per unit of target time a row can be believed to make: its prior, or a round's best
    (round_rate with every proposal kept, or none proposed). A batch whose decode step makes at least this many
    drafts no row, whatever their records say (Pace.drafts is False for every row, and changes none)."""
    best = max(round_rate(p, p, round_cost, token_cost) for p in range(k + 1))
    return max(prior, best)


@dataclass
class Pace:
    """A row's drafting record: whether drafting pays for it, learnt from its rounds."""

    gain: float  # tokens per unit of target time its rounds made: the mean of the last ~SPAN, the prior counting one
    rounds: int = 0
    trial: int = TRIAL  # rounds it drafts before its gain can stop it
    waited: int = 0  # steps since its own rounds stopped it, or since it last tried again
    patience: int = RETRY  # steps it waits before trying again

    def drafts(self, bar: float, prior: float) -> bool:
        """Whether the row drafts this step, when the batch's decode step makes `bar` tokens per unit."""
        if self.gain > bar:
            self.patience = RETRY
            return True
        if prior <= bar:  # the batch stops it, not its rounds: nothing to try
            return False
        if self.trial:
            self.trial -= 1
            return True
        self.waited += 1
        if self.waited < self.patience:
            return False
        self.waited, self.patience, self.trial = 0, min(2 * self.patience, MAX_WAIT), TRIAL - 1
        return True

    def observe(self, rate: float) -> None:
        """A round made `rate` tokens per unit of target time (round_rate)."""
        self.rounds += 1
        self.gain += (rate - self.gain) / min(self.rounds + 1, SPAN)


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
