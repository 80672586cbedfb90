"""Speculative decoding within the zoo: a shallow variant drafts, a deep one verifies (Leviathan et al. 2023).

The engine is gptzoo.zoo.generate's `Batch` given a `Draft`: this module holds the rules it follows, as small pure
functions, and its `Drafter`, which owns the draft model's slot cache and runs every draft call
(`gptzoo.zoo.generate.generate_drafted`: one completion drafted).

Each round a row's draft proposes up to k tokens, one cheap step each, from its own slot cache; the target scores
the row's newest token and all proposals in one call (k + 1 new tokens on its slot) and keeps the longest prefix it
agrees with, plus one token of its own: the first it disagrees on, or one more when it agreed with all. At
temperature 0 "agree" means the target's argmax, so the text is the target's own greedy text. Above it, proposal i is
kept with probability min(1, p(x)/q(x)) and a rejected one is replaced by a draw from max(0, p - q), normalised,
where p and q are the target's and the draft's distributions after temperature, top-k and top-p: the output then
follows the target's sampling distribution exactly, however many tokens were proposed. Rolling back a rejected tail
costs nothing: a slot's length is just a number (gptzoo.zoo.step_contract), and what lies beyond it is overwritten
before it is read. Both models see the target's windows (the `half` or `slide` context policy: the draft's slot
starts again where the target's window moved past it), so greedy output is the target's output without a draft.

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

from dataclasses import dataclass, field

import numpy as np

from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.rows import Feed, Row, Slots
from gptzoo.zoo.sampling import SamplingParams, draw, logits_to_probs, sample
from gptzoo.zoo.step_contract import StepRunner

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


def check_policy(policy: str | None) -> None:
    """Drafting needs a cached context policy (`half`, `slide`, or None: the family's default, one of them): `exact`
    recomputes every window, with no cache to verify on."""
    if policy == "exact":
        raise BadValue("speculative decoding needs a cached context policy (half or slide), not exact")


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


# -- the drafter ----------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Round:
    """A drafting row's step: what it feeds, then up to `k` proposals (with the distributions they were drawn from,
    above temperature 0), which the target verifies together with the feed in one call of its own."""

    feed: Feed
    k: int
    proposals: list[int] = field(default_factory=list)
    qs: list[np.ndarray] = field(default_factory=list)
    draft_logits: np.ndarray | None = None  # the draft's, for the next proposal
    logits: np.ndarray | None = None  # the target's over the feed's last token and the proposals [len + 1, V]
    kept: int = 0  # proposals the target kept


@dataclass
class DraftSlot:
    """What one slot of the draft's cache holds: context[start : start + cached] of the row there."""

    pace: Pace | None = None  # that row's drafting record (None: it does not draft)
    start: int = 0  # at or after the row's own `start`: the draft may see less of the window
    cached: int = 0


class Drafter:
    """A Batch's speculative decoding. It owns the draft model's slot cache (the batch's slots, the same indices)
    and runs every draft call; the Batch runs every target call. Per step: `plan` (which rows draft, at most how
    many tokens), `propose` (their proposals), then, once the Batch has verified each round, `settle` (what each row
    keeps). A round is counted once, on its row (`Row.drafted`, `Row.accepted`)."""

    def __init__(self, draft: Draft, target: StepRunner, policy: str, seats: Slots):
        check_policy(policy)
        check_pair(target, draft.model)
        self.draft, self.seats, self.block = draft, seats, target.shape.block_size
        self.cache = draft.model.new_cache(seats.n)
        self.slots = [DraftSlot() for _ in range(seats.n)]
        self.round_cost, self.token_cost = draft.costs(target)  # in target steps
        # a batch step making this many tokens per unit leaves every row undrafted: `plan` need not ask them
        self.ceiling = (gain_ceiling(draft.k, draft.prior, self.round_cost, self.token_cost)
                        if draft.adaptive else float("inf"))
        self.calls = 0  # draft calls, for tests and profiling

    def seat(self, row: Row) -> None:
        """A row took its slot: the draft's slot starts empty."""
        self.slots[row.slot] = DraftSlot(Pace(self.draft.prior) if row.may_draft else None)

    def window_moved(self, row: Row) -> None:
        """The row's window now starts at context index row.start (re-prefilled, or slid)."""
        s = self.slots[row.slot]
        if s.start < row.start:  # the draft's positions would run past the new window's
            s.start, s.cached = row.start, 0

    def plan(self, decode: list[Feed], fill: list[Feed]) -> list[Round]:
        """Which rows draft this step, and how many tokens at most: taken out of `decode` and `fill` (rows feeding
        the end of a prompt or a re-prefilled window verify their proposals in the same call)."""
        d = self.draft
        ending = [f for f in fill if len(f.tokens) == len(f.row.pending)]  # rows that get a token this step
        bar = batch_rate(len(decode) + len(ending), d.row_cost)
        if bar >= self.ceiling:  # a full enough batch: no row drafts, and asking each costs a step's 0.2-0.3%
            return []
        rounds = []
        for feeds in (decode, ending):
            for f in feeds:
                pace = self.slots[f.row.slot].pace
                if pace and (k := self._length(f, pace, bar)):
                    rounds.append(Round(f, k))
        if rounds:
            drafting = {id(rd.feed.row) for rd in rounds}
            decode[:] = [f for f in decode if id(f.row) not in drafting]
            fill[:] = [f for f in fill if id(f.row) not in drafting]
        return rounds

    def _length(self, f: Feed, pace: Pace, bar: float) -> int:
        """The most tokens the row drafts this step (0: it decodes in the batched call)."""
        d, r = self.draft, f.row
        # proposals must fit the window after what the row feeds, and within max_tokens
        room = min(self.block - r.cached - len(f.tokens), r.params.max_tokens - len(r.generated), d.k)
        if room < 1 or not d.adaptive:
            return max(room, 0)
        return room if pace.drafts(bar, d.prior) else 0

    def propose(self, rounds: list[Round]) -> None:
        """Each round's proposals. First the draft's slot catches up with the row's window, to its newest token (one
        token usually, the whole window after a re-prefill or a pause in drafting); then one batched one-token call
        per proposal for the rows still drafting."""
        d = self.draft
        catch_one = []
        for rd in rounds:
            r, s = rd.feed.row, self.slots[rd.feed.row.slot]
            end = len(r.prompt) + len(r.generated)  # the newest token, context[end - 1], goes in first
            lag = end - s.start - s.cached  # the tokens the draft's slot lacks
            if lag > CATCH_UP:  # a re-prefilled window, a pause in drafting: the draft reads the end only
                s.start, s.cached = max(r.start, end - CATCH_UP), 0
                lag = end - s.start
            if lag == 1:
                catch_one.append(rd)
            else:
                self.calls += 1
                rd.draft_logits = d.model.extend(self.cache, r.slot, r.last(lag), s.cached, 1)[0]
                s.cached += lag
        if catch_one:
            self._decode(catch_one, [rd.feed.tokens[-1] for rd in catch_one])
        live = rounds
        while live:
            more = []
            for rd in live:
                token, confidence, q = propose(rd.draft_logits, rd.feed.row.params, rd.feed.row.rng)
                rd.proposals.append(token)
                if q is not None:
                    rd.qs.append(q)
                if len(rd.proposals) < rd.k and (not d.adaptive or confidence >= d.confidence):
                    more.append(rd)
            live = more
            if live:
                self._decode(live, [rd.proposals[-1] for rd in live])

    def _decode(self, rounds: list[Round], tokens: list[int]) -> None:
        """One draft call feeding tokens[i] to rounds[i]'s row (Slots.one_token): each round's draft_logits."""
        self.calls += 1
        if len(rounds) == 1:  # one stream: no arrays to build
            rd = rounds[0]
            s = self.slots[rd.feed.row.slot]
            rd.draft_logits = self.draft.model.decode(self.cache, rd.feed.row.slot, tokens, (s.cached,))[0]
            s.cached += 1
            return
        slots = self.slots
        logits = self.seats.one_token(self.draft.model, self.cache, [rd.feed.row for rd in rounds], tokens,
                                      lambda r: slots[r.slot].cached)
        for rd, row_logits in zip(rounds, logits, strict=True):
            rd.draft_logits = row_logits
            slots[rd.feed.row.slot].cached += 1

    def settle(self, rounds: list[Round]) -> None:
        """Each verified round (`Round.logits`): the row keeps the prefix of its proposals the target agrees with
        and adds the target's own next token; both slots roll back to what was kept."""
        for rd in rounds:
            r, props, s = rd.feed.row, rd.proposals, self.slots[rd.feed.row.slot]
            if r.params.temperature == 0:
                kept, extra = accept_greedy(rd.logits, props)
            else:
                kept, extra = accept(rd.logits, props, rd.qs, r.params, r.rng)
            rd.kept = len(kept)
            r.cached += len(rd.feed.tokens) + len(kept)  # the rejected tail lies past the slot's length: rolled back
            s.cached = min(s.cached, r.start + r.cached - s.start)
            r.pending, r.prompting = [], False
            r.drafted += len(props)
            r.accepted += len(kept)
            s.pace.observe(round_rate(len(kept), len(props), self.round_cost, self.token_cost))
            for token in kept + [extra]:
                r.take(token)
                if r.done:
                    break
