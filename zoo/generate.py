"""Generation on any backend of the cached step (a gptzoo.zoo.step_contract.StepRunner: onnxruntime or torch):
prefill, cached decode, nanoGPT-exact context cropping, batching.

A `Batch` holds rows (sequences, gptzoo.zoo.rows) over one slot cache (gptzoo.zoo.step_contract): each row owns a
slot, and one session call per step decodes every row, one sampling call samples them all; each row has its own
positions, sampling parameters, random stream and stop sequences. Rows join (their prompt fed by the next steps, in
chunks of `prefill_chunk` tokens, beside the decoding rows) and leave between steps without copying any cache: that is
what continuous batching in the server builds on. A step is a `Plan` (what each row feeds, which rows draft), its
calls, then the sampling of what they returned.

Given a `Draft` (gptzoo.zoo.speculative), rows also decode speculatively: a row's draft model proposes tokens from its
own slot cache (the same slot index; the `Drafter` owns it), the target verifies them in one call per row, and the
row takes every token the target agrees with; how many a row drafts follows its acceptance and the batch's
occupancy, down to none, when it decodes in the batched call like any other row.

Context policies, when a row's window (block_size tokens) is full (gptzoo.zoo.context): `exact` (nanoGPT's crop,
every token recomputes the window), `half` (re-prefill half the window once; gpt2's default) and `slide` (the oss
block's default: keep the window's last 3/4 by moving them to the front of the slot, no recompute, and decode on at
the true positions). A prompt longer than the window is cropped to its last block_size tokens under every policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from gptzoo.zoo import context
from gptzoo.zoo import speculative as spec
from gptzoo.zoo.detok import StopText
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.rows import Feed, Row, Slots, StepStats, call_runs
from gptzoo.zoo.sampling import SamplingParams, sample, sample_rows
from gptzoo.zoo.step_contract import Call, StepRunner
from gptzoo.zoo.tokenizers import Tokenizer

POLICIES = context.POLICIES
CACHED, OFFSET = attrgetter("cached"), attrgetter("offset")  # a row's cached tokens, its slot's first position


@dataclass
class Result:
    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int


class Plan:
    """One step's work: rows feeding one token (one batched call), rows feeding several (prompt chunks, re-prefilled
    windows: one call per run of neighbouring slots), and drafting rows (proposals, then one verification each);
    and, as the calls run, the rows whose next token can be sampled, with their logits (one array per call, rows in
    order). A slotted class: one is made per step, and a 1-layer single stream steps in ~50 µs."""

    __slots__ = ("decode", "fill", "rounds", "ready", "logits")

    def __init__(self) -> None:
        self.decode: list[Feed] = []
        self.fill: list[Feed] = []
        self.rounds: list[spec.Round] = []
        self.ready: list[Row] = []
        self.logits: list[np.ndarray] = []

    def finished(self) -> list[Row]:
        done = [f.row for f in self.decode if f.row.done]
        if self.fill:
            done += [f.row for f in self.fill if f.row.done]
        if self.rounds:
            done += [rd.feed.row for rd in self.rounds if rd.feed.row.done]
        return done


class Batch:
    """Rows decoding together over one slot cache of `slots` rows (fixed: rows take and free slots, the cache is
    never copied or resized). `prefill_chunk`: prompt tokens fed per step at most (None: no limit), so a long prompt
    does not stall the rows already decoding. `draft`: a draft model (with its own slot cache, the same slots) that
    rows use to decode speculatively (gptzoo.zoo.speculative); not under `exact`. `policy`: None for the model's
    family's default (gptzoo.zoo.context); `keep`: what `slide` keeps of a full window (default 3/4 of it)."""

    def __init__(self, model: StepRunner, tokenizer: Tokenizer, policy: str | None = None, slots: int = 8,
                 prefill_chunk: int | None = None, draft: spec.Draft | None = None, keep: int | None = None):
        policy = context.resolve(policy, model.shape)
        if slots < 1 or (prefill_chunk is not None and prefill_chunk < 1):
            raise BadValue("a batch needs at least one slot and a prefill chunk of at least one token")
        self.model, self.tok, self.policy = model, tokenizer, policy
        self.block = model.shape.block_size
        self.keep = context.slide_keep(self.block) if keep is None else keep
        if not 0 <= self.keep < self.block:
            raise BadValue(f"slide keeps 0 to {self.block - 1} entries of a window of {self.block}, not {keep}")
        self.slid = policy == "slide"
        self.slots, self.prefill_chunk = slots, prefill_chunk
        self.seats = Slots(slots)
        self.cache = model.new_cache(slots)
        self.draft = draft
        self.drafter = spec.Drafter(draft, model, policy, self.seats) if draft is not None else None
        self.rows: list[Row] = []
        self.calls = 0  # session calls of the target, for tests and profiling
        self.slides = 0  # windows slid (moves of a slot's entries), for tests
        self.stats = StepStats()
        self.drafted = self.accepted = 0  # tokens the draft proposed and the target kept: the steps' sums

    # -- rows joining and leaving -------------------------------------------------------------------------------
    def new_row(self, prompt_ids: list[int], params: SamplingParams, on_text=None, tag=None,
                draft: bool = True) -> Row:
        """A row for `add`; `draft=False`: it never decodes speculatively (a request that opted out)."""
        if not prompt_ids:
            raise BadValue("the prompt is empty")
        rng = np.random.default_rng(params.seed)
        return Row(prompt_ids[-self.block :], params, StopText(self.tok, params.stop), rng, on_text=on_text, tag=tag,
                   may_draft=draft and self.draft is not None)

    @property
    def cache_bytes(self) -> int:
        """Memory of the slot cache: every layer's keys and values for every slot (float32), the draft's too."""
        draft = self.draft.model.shape.cache_bytes(self.slots) if self.draft is not None else 0
        return self.model.shape.cache_bytes(self.slots) + draft

    @property
    def free_slots(self) -> int:
        return len(self.seats.free)

    def add(self, rows: list[Row]) -> None:
        """Give each row a free slot; their prompts are fed by the next steps (chunked under `prefill_chunk`), and a
        row's first token comes in the step that feeds the end of its prompt."""
        if len(rows) > len(self.seats.free):
            raise BadValue(f"{len(rows)} rows do not fit: {len(self.seats.free)} of {self.slots} cache slots are free")
        for r in rows:
            self.seats.take(r)
            r.cached, r.pending, r.prompting, r.start = 0, list(r.prompt), True, 0
            if self.drafter is not None:
                self.drafter.seat(r)
        self.rows += rows

    def remove(self, rows: list[Row]) -> None:
        """Free the rows' slots: nothing is copied; what they hold lies past the next owner's length, unread."""
        if not rows:
            return
        for r in rows:
            self.seats.release(r)
        self.rows = [r for r in self.rows if r.slot >= 0]

    # -- one step: plan, run, accept ----------------------------------------------------------------------------
    def step(self, filled: Callable[[], None] | None = None) -> list[Row]:
        """Advance every unfinished row by one token (or, drafting, by as many as the target accepts and one), and
        feed waiting prompts (`prefill_chunk` a step); returns the rows that finished in this step. Per step, not per
        row: one call for every row that feeds one token, one call per run of neighbouring slots that feed equally
        many (re-prefills of full windows, prompt chunks), one sampling call for every row that got its logits;
        drafting rows: one draft call per proposal for all of them, one verification call each.

        `filled`: called when the step's multi-token feeds are done and the rows they completed (prompts: their
        first token) sampled, before the one-token call of the others, so a server can send first tokens without
        waiting for it (issue 27). Those rows then sample in a call of their own: the same tokens, row by row."""
        self.stats = StepStats()
        plan = self._plan()
        if not plan.decode and not plan.fill and not plan.rounds:
            return []
        self._execute(plan, filled)
        self._accept(plan)
        return plan.finished()

    def _plan(self) -> Plan:
        """What each unfinished row feeds this step (prompt chunks under `prefill_chunk`), and which rows draft."""
        plan = Plan()
        chunk_left = self.prefill_chunk if self.prefill_chunk is not None else float("inf")
        for r in self.rows:
            if r.done:
                continue
            if not r.pending:  # it sampled a token last step: feed it
                self._next_feed(r)
            if r.prompting:
                n = min(len(r.pending), chunk_left)
                if n <= 0:
                    continue  # this step's prefill chunk is spent: the rest of the prompts wait for the next step
                chunk_left -= n
            else:
                n = len(r.pending)
            (plan.decode if n == 1 else plan.fill).append(Feed(r, r.pending[:n]))
        if self.drafter is not None and (plan.decode or plan.fill):
            plan.rounds = self.drafter.plan(plan.decode, plan.fill)
        return plan

    def _execute(self, plan: Plan, filled: Callable[[], None] | None = None) -> None:
        """The plan's calls: the draft's proposals, the multi-token feeds, the batched decode, the verifications
        (`filled`: see `step`)."""
        st = self.stats
        if plan.rounds:
            t0 = time.perf_counter()
            self.drafter.propose(plan.rounds)
            st.draft_seconds = time.perf_counter() - t0
        if plan.fill:
            t0 = time.perf_counter()
            for feeds in call_runs(sorted(plan.fill, key=lambda f: f.row.slot)):
                self._fill(feeds, plan)
                st.prefill_tokens += sum(len(f.tokens) for f in feeds)
            st.prefill_seconds = time.perf_counter() - t0
            if filled is not None and plan.ready and plan.decode and not plan.rounds:
                self._sample(plan)
                filled()
        if plan.decode:
            t0 = time.perf_counter()
            self._decode(plan.decode, plan)
            st.decode_rows, st.decode_seconds = len(plan.decode), time.perf_counter() - t0
        if plan.rounds:
            t0 = time.perf_counter()
            for rd in plan.rounds:  # one call per row: feed and proposals, a logit for each proposal and one more
                r = rd.feed.row
                self.calls += 1
                rd.logits = self.model.extend(self.cache, r.slot, rd.feed.tokens + rd.proposals, r.cached,
                                              len(rd.proposals) + 1, r.offset)
            st.verify_rows, st.verify_seconds = len(plan.rounds), time.perf_counter() - t0

    def _accept(self, plan: Plan) -> None:
        """Sample every ready row's next token in one call (then its text); drafting rows keep what the target
        verified."""
        if plan.ready:
            self._sample(plan)
        if plan.rounds:
            st = self.stats
            t0 = time.perf_counter()
            self.drafter.settle(plan.rounds)
            st.verify_seconds += time.perf_counter() - t0
            st.drafted = sum(len(rd.proposals) for rd in plan.rounds)
            st.accepted = sum(rd.kept for rd in plan.rounds)
            self.drafted += st.drafted
            self.accepted += st.accepted

    def _sample(self, plan: Plan) -> None:
        """The next token of every row in `plan.ready` (in one call), which then leave it."""
        rows = plan.ready
        logits = np.concatenate(plan.logits) if len(plan.logits) > 1 else plan.logits[0]
        if len(rows) == 1:  # no lists to build for one row (a single stream: every microsecond shows)
            tokens = [sample(logits[0], rows[0].params, rows[0].rng)]
        else:
            tokens = sample_rows(logits, [r.params for r in rows], [r.rng for r in rows])
        plan.ready, plan.logits = [], []
        for r, token in zip(rows, tokens, strict=True):
            r.take(token)

    def _next_feed(self, r: Row) -> None:
        """What a row that just sampled feeds next: that token (after sliding a full window), or a recomputed
        window."""
        if r.cached < self.block:
            r.pending = [r.generated[-1]]
        elif self.slid:  # the last `keep` entries to the slot's front, positions unchanged: no call at all
            gone = r.cached - self.keep
            self.model.move(self.cache, r.slot, gone, self.keep)
            r.cached, r.offset, r.start, r.pending = self.keep, r.offset + gone, r.start + gone, [r.generated[-1]]
            self.slides += 1
            if self.drafter is not None:
                self.drafter.window_moved(r)
        elif self.policy == "half":  # re-prefill half a window and the new token, then decode from the cache again
            r.cached, r.pending = 0, r.context[-(self.block // 2 + 1) :]
            r.start = len(r.prompt) + len(r.generated) - len(r.pending)
            if self.drafter is not None:
                self.drafter.window_moved(r)
        else:  # exact: as nanoGPT, the last block_size tokens again, with no cache to reuse (positions shift)
            r.cached, r.pending = 0, r.context[-self.block :]
            r.start = len(r.prompt) + len(r.generated) - len(r.pending)

    def _decode(self, feeds: list[Feed], plan: Plan) -> None:
        """One target call feeding one token to each of `feeds` (Slots.one_token)."""
        self.calls += 1
        if len(feeds) == 1:  # one stream: no arrays to build
            r = feeds[0].row
            logits = self.model.decode(self.cache, r.slot, feeds[0].tokens, (r.cached,), (r.offset,))
            if self._advance(feeds, plan):
                plan.logits.append(logits.copy())  # the decode's output is reused
            return
        logits = self.seats.one_token(self.model, self.cache, [f.row for f in feeds], [f.tokens[0] for f in feeds],
                                      CACHED, OFFSET if self.slid else None)
        if done := self._advance(feeds, plan):
            plan.logits.append(logits[done])

    def _fill(self, feeds: list[Feed], plan: Plan) -> None:
        """One call for rows in neighbouring slots that feed equally many tokens from the start of their slots, or
        for one row."""
        call = Call.fill(feeds[0].row.slot, [f.tokens for f in feeds], [f.row.cached for f in feeds],
                         offsets=[f.row.offset for f in feeds] if self.slid else None)
        logits = self._run(call)
        if done := self._advance(feeds, plan):
            plan.logits.append(logits[done, 0])

    def _advance(self, feeds: list[Feed], plan: Plan) -> list[int]:
        """The fed tokens are in the cache now; rows with nothing left to feed are ready to sample (their indices
        in `feeds`)."""
        done = []
        for i, f in enumerate(feeds):
            r = f.row
            r.cached += len(f.tokens)
            r.pending = r.pending[len(f.tokens) :]
            if not r.pending:
                r.prompting = False
                done.append(i)
                plan.ready.append(r)
        return done

    def _run(self, call: Call) -> np.ndarray:
        self.calls += 1
        return self.model.run(self.cache, call)


def generate(
    model: StepRunner,
    tokenizer: Tokenizer,
    prompts: list[str],
    params: SamplingParams | list[SamplingParams],
    policy: str | None = None,
    on_text: Callable[[int, str], None] | None = None,
) -> list[Result]:
    """Generate a completion for each prompt, all rows in one batch; `on_text(row, delta)` streams text. `policy`:
    None for the model's family's default (slide for oss, half for gpt2)."""
    params_list = params if isinstance(params, list) else [params] * len(prompts)
    batch = Batch(model, tokenizer, policy, slots=max(len(prompts), 1))
    rows = []
    for i, (p, sp) in enumerate(zip(prompts, params_list, strict=True)):
        cb = (lambda d, i=i: on_text(i, d)) if on_text else None
        rows.append(batch.new_row(tokenizer.encode(p), sp, on_text=cb))
    batch.add(rows)
    while batch.rows:
        batch.remove(batch.step())
    return [Result(r.text.text, r.generated, r.finish_reason, len(r.prompt)) for r in rows]


@dataclass
class SpecStats:
    target_calls: int = 0  # calls of the target (prefill, verifications, plain steps)
    drafted: int = 0  # tokens the draft proposed
    accepted: int = 0  # of which the target kept

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def generate_drafted(target: StepRunner, draft: StepRunner | spec.Draft, tokenizer: Tokenizer, prompt: str,
                     params: SamplingParams, k: int = 4, on_text: Callable[[str], None] | None = None,
                     policy: str | None = None) -> tuple[Result, SpecStats]:
    """One completion of `prompt` by `target`, drafted by `draft` (a model: drafting up to `k` tokens a round; or a
    Draft saying how), in a one-row Batch under `policy` (None: the target's family's default)."""
    batch = Batch(target, tokenizer, policy, slots=1,
                  draft=draft if isinstance(draft, spec.Draft) else spec.Draft(draft, k))
    row = batch.new_row(tokenizer.encode(prompt), params, on_text=on_text)
    batch.add([row])
    while not row.done:
        batch.step()
    return (Result(row.text.text, row.generated, row.finish_reason, len(row.prompt)),
            SpecStats(batch.calls, row.drafted, row.accepted))
