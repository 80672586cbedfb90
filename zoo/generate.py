"""Generation on any backend of the cached step (a gptzoo.zoo.step_contract.StepRunner: onnxruntime or torch):
prefill, cached decode, nanoGPT-exact context cropping, batching.

A `Batch` holds rows (sequences) over one slot cache (gptzoo.zoo.step_contract): each row owns a slot, and one session
call per step decodes every row, one sampling call samples them all; each row has its own positions, sampling
parameters, random stream and stop sequences. Rows join (their prompt fed by the next steps, in chunks under a token
budget, beside the decoding rows) and leave between steps without copying any cache: that is what continuous
batching in the server builds on.

Given a `Draft` (gptzoo.zoo.speculative), rows also decode speculatively: a row's draft model proposes tokens from its
own slot cache (the same slot index), the target verifies them in one call per row, and the row takes every token
the target agrees with; how many a row drafts follows its acceptance and the batch's occupancy, down to none, when
it decodes in the batched call like any other row.

Context policies, when a row's window (block_size tokens) is full:
- `exact`: as nanoGPT's `generate`, every further token re-runs the last block_size tokens with no cache (the
  positions shift, so no cache stays exact). Greedy output equals nanoGPT's token for token.
- `half`: re-prefill the last block_size/2 tokens once and decode from the cache again until the window fills.
  Far cheaper past the window; the model sees between half and all of the window. See docs/benchmarks.md.
"""

from __future__ import annotations

import codecs
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gptzoo.zoo import speculative as spec
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.sampling import SamplingParams, sample, sample_rows
from gptzoo.zoo.step_contract import Call, StepRunner
from gptzoo.zoo.tokenizers import Tokenizer

POLICIES = ("exact", "half")


class StopText:
    """Incremental text of a row's generated tokens: what is safe to emit now, and whether a stop sequence hit.
    Text that could still become a stop sequence is held back; an incremental UTF-8 decoder holds back the bytes of
    a character a BPE token split. Each token costs the same however long the text already is: only the text not
    emitted yet (at most the longest stop sequence, plus the token's own text) is searched or copied."""

    def __init__(self, tokenizer: Tokenizer, stop: list[str]):
        self.tok, self.stop = tokenizer, stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._emitted: list[str] = []  # the deltas returned so far
        self._pending = ""  # decoded but held back
        self.stopped = False

    @property
    def text(self) -> str:
        """The text so far (final once stopped or finished)."""
        if len(self._emitted) > 1:
            self._emitted = ["".join(self._emitted)]
        return (self._emitted[0] if self._emitted else "") + self._pending

    def push(self, token: int) -> str:
        pending = self._pending + self._utf8.decode(self.tok.decode_bytes([token]))
        # A stop sequence completed by this token starts inside the held-back text: whatever was emitted lies more
        # than `hold` characters back. The earliest start wins, whatever the order of the list.
        at = -1
        for s in self.stop:
            i = pending.find(s)
            if i != -1 and (at == -1 or i < at):
                at = i
        if at != -1:
            self.stopped = True
            return self._emit(pending[:at], at)
        return self._emit(pending, max(len(pending) - self.hold, 0))

    def finish(self) -> str:
        if self.stopped:
            return ""
        # a dangling partial character becomes U+FFFD
        pending = self._pending + self._utf8.decode(b"", final=True)
        return self._emit(pending, len(pending))

    def _emit(self, pending: str, upto: int) -> str:
        delta, self._pending = pending[:upto], pending[upto:]
        if delta:
            self._emitted.append(delta)
        return delta


@dataclass(eq=False)  # rows are compared by identity
class Row:
    prompt: list[int]  # prompt token ids (already cropped to the window)
    params: SamplingParams
    text: StopText
    rng: np.random.Generator
    generated: list[int] = field(default_factory=list)
    slot: int = -1  # this row's slot in the batch's cache (-1: not in a batch)
    cached: int = 0  # positions 0 .. cached-1 of the slot hold this row's window
    pending: list[int] = field(default_factory=list)  # tokens to write before the next one can be sampled
    prompting: bool = False  # pending is (the rest of) the prompt: fed in chunks under the step's budget
    finish_reason: str | None = None  # "stop" or "length" when done
    on_text: Callable[[str], None] | None = None
    tag: object = None  # the caller's handle (e.g. a server request)
    pace: spec.Pace | None = None  # drafts when it pays (None: the batch has no draft, or the request opted out)
    start: int = 0  # the context index at position 0 of its slot (its window's first token)
    draft_start: int = 0  # and of the draft's slot: at or after `start` (the draft may see less of the window)
    draft_cached: int = 0  # positions 0 .. draft_cached-1 of the draft's slot hold context[draft_start:]
    drafted: int = 0  # tokens the draft proposed for this row
    accepted: int = 0  # of which the target kept

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def context(self) -> list[int]:
        return self.prompt + self.generated

    def take(self, token: int) -> None:
        """A sampled token joins the row: its text goes to on_text, and the row ends at a stop sequence or at
        max_tokens."""
        self.generated.append(token)
        delta = self.text.push(token)
        if self.text.stopped:
            self.finish_reason = "stop"
        elif len(self.generated) >= self.params.max_tokens:
            self.finish_reason = "length"
            delta += self.text.finish()
        if delta and self.on_text:
            self.on_text(delta)


@dataclass
class Result:
    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int


@dataclass
class StepStats:
    """What the last step did, for metrics: tokens written by multi-token calls (prompts, re-prefills) and rows
    decoded, the drafting rows' proposals and what the target kept of them, and the time each kind of call took."""

    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_rows: int = 0  # rows in the batched one-token call
    decode_seconds: float = 0.0
    verify_rows: int = 0  # rows that drafted: each verified in a call of its own
    verify_seconds: float = 0.0
    drafted: int = 0  # tokens the draft proposed
    accepted: int = 0  # of which the target kept
    draft_seconds: float = 0.0  # the draft model's calls


class Batch:
    """Rows decoding together over one slot cache of `slots` rows (fixed: rows take and free slots, the cache is
    never copied or resized). `prefill_chunk`: prompt tokens fed per step at most (None: no limit), so a long prompt
    does not stall the rows already decoding. `draft`: a draft model (with its own slot cache, the same slots) that
    rows use to decode speculatively (gptzoo.zoo.speculative); the `half` policy only."""

    def __init__(self, model: StepRunner, tokenizer: Tokenizer, policy: str = "half", slots: int = 8,
                 prefill_chunk: int | None = None, draft: spec.Draft | None = None):
        if policy not in POLICIES:
            raise BadValue(f"unknown context policy {policy!r}; choose one of: {', '.join(POLICIES)}")
        if slots < 1 or (prefill_chunk is not None and prefill_chunk < 1):
            raise BadValue("a batch needs at least one slot and a prefill chunk of at least one token")
        if draft is not None:
            if policy != "half":  # `exact` recomputes every window: no cache to verify on
                raise BadValue("speculative decoding needs the half context policy")
            spec.check_pair(model, draft.model)
        self.model, self.tok, self.policy = model, tokenizer, policy
        self.block = model.shape.block_size
        self.cache = model.new_cache(slots)
        self.slots, self.prefill_chunk = slots, prefill_chunk
        self._free = list(range(slots))  # a heap: the lowest free slot first keeps the decode call's range short
        self._owner: list[Row | None] = [None] * slots
        self.rows: list[Row] = []
        self.calls = 0  # session calls of the target, for tests and profiling
        self.stats = StepStats()
        self.draft, self.draft_calls = draft, 0
        self.drafted = self.accepted = 0  # tokens the draft proposed and the target kept, since the batch began
        if draft is not None:
            self.draft_cache = draft.model.new_cache(slots)
            self._round_cost, self._token_cost = draft.costs(model)  # in target steps
            # a batch step making this many tokens per unit leaves every row undrafted: `_plan` need not ask them
            self._ceiling = (spec.gain_ceiling(draft.k, draft.prior, self._round_cost, self._token_cost)
                             if draft.adaptive else float("inf"))

    # -- rows joining and leaving -------------------------------------------------------------------------------
    def new_row(self, prompt_ids: list[int], params: SamplingParams, on_text=None, tag=None,
                draft: bool = True) -> Row:
        """A row for `add`; `draft=False`: it never decodes speculatively (a request that opted out)."""
        if not prompt_ids:
            raise BadValue("the prompt is empty")
        rng = np.random.default_rng(params.seed)
        row = Row(prompt_ids[-self.block :], params, StopText(self.tok, params.stop), rng, on_text=on_text, tag=tag)
        if draft and self.draft is not None:
            row.pace = spec.Pace(self.draft.prior)
        return row

    @property
    def cache_bytes(self) -> int:
        """Memory of the slot cache: every layer's keys and values for every slot (float32), the draft's too."""
        draft = self.draft.model.shape.cache_bytes(self.slots) if self.draft is not None else 0
        return self.model.shape.cache_bytes(self.slots) + draft

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def add(self, rows: list[Row]) -> None:
        """Give each row a free slot; their prompts are fed by the next steps (chunked under the budget), and a
        row's first token comes in the step that feeds the end of its prompt."""
        if len(rows) > len(self._free):
            raise BadValue(f"{len(rows)} rows do not fit: {len(self._free)} of {self.slots} cache slots are free")
        for r in rows:
            r.slot, r.cached, r.pending, r.prompting = heapq.heappop(self._free), 0, list(r.prompt), True
            r.start = r.draft_start = r.draft_cached = 0
            self._owner[r.slot] = r
        self.rows += rows

    def remove(self, rows: list[Row]) -> None:
        """Free the rows' slots: nothing is copied; what they hold lies past the next owner's length, unread."""
        if not rows:
            return
        for r in rows:
            heapq.heappush(self._free, r.slot)
            self._owner[r.slot], r.slot = None, -1
        self.rows = [r for r in self.rows if r.slot >= 0]

    # -- one step ---------------------------------------------------------------------------------------------
    def step(self) -> list[Row]:
        """Advance every unfinished row by one token (or, drafting, by as many as the target accepts and one), and
        feed waiting prompts up to the chunk budget; returns the rows that finished in this step. Per step, not per
        row: one call for every row that feeds one token, one call per run of neighbouring slots that feed equally
        many (re-prefills of full windows, prompt chunks), one sampling call for every row that got its logits;
        drafting rows: one draft call per proposal for all of them, one verification call each."""
        self.stats = StepStats()
        single, multi = [], []
        budget = self.prefill_chunk if self.prefill_chunk is not None else float("inf")
        for r in self.rows:
            if r.done:
                continue
            if not r.pending:  # it sampled a token last step: feed it
                self._next_feed(r)
            if r.prompting:
                n = min(len(r.pending), budget)
                if n <= 0:
                    continue  # the budget is spent: the rest of the prompts wait for the next step
                budget -= n
            else:
                n = len(r.pending)
            (single if n == 1 else multi).append((r, r.pending[:n]))
        if not single and not multi:
            return []
        verify = self._plan(single, multi) if self.draft is not None else []
        got_rows, got_logits = [], []
        if verify:
            t0 = time.perf_counter()
            proposals = self._propose(verify)
            self.stats.draft_seconds = time.perf_counter() - t0
        if multi:
            t0 = time.perf_counter()
            for feeds in _runs(sorted(multi, key=lambda f: f[0].slot)):
                self._feed(feeds, got_rows, got_logits)
                self.stats.prefill_tokens += sum(len(t) for _, t in feeds)
            self.stats.prefill_seconds = time.perf_counter() - t0
        if single:
            t0 = time.perf_counter()
            self._decode(single, got_rows, got_logits)
            self.stats.decode_rows, self.stats.decode_seconds = len(single), time.perf_counter() - t0
        if got_rows:
            self._accept(got_rows, np.concatenate(got_logits) if len(got_logits) > 1 else got_logits[0])
        if verify:
            t0 = time.perf_counter()
            self._verify(verify, proposals)
            self.stats.verify_rows, self.stats.verify_seconds = len(verify), time.perf_counter() - t0
        return [f[0] for f in single + multi + verify if f[0].done]

    def _next_feed(self, r: Row) -> None:
        """What a row that just sampled feeds next: that token, or, with its window full, a recomputed window."""
        if r.cached < self.block:
            r.pending = [r.generated[-1]]
        elif self.policy == "half":  # re-prefill half a window and the new token, then decode from the cache again
            r.cached, r.pending = 0, r.context[-(self.block // 2 + 1) :]
            r.start = len(r.prompt) + len(r.generated) - len(r.pending)
            if r.draft_start < r.start:  # the draft's positions would run past the new window's
                r.draft_start, r.draft_cached = r.start, 0
        else:  # exact: as nanoGPT, the last block_size tokens again, with no cache to reuse (positions shift)
            r.cached, r.pending = 0, r.context[-self.block :]
            r.start = len(r.prompt) + len(r.generated) - len(r.pending)

    def _decode(self, feeds: list[tuple[Row, list[int]]], got_rows: list[Row], got_logits: list[np.ndarray]) -> None:
        """One target call feeding one token to each of `feeds` (`_one_token`)."""
        self.calls += 1
        if len(feeds) == 1:  # one stream: no arrays to build
            r, t = feeds[0]
            logits = self.model.decode(self.cache, r.slot, t, (r.cached,))
            if self._advance(feeds, got_rows):
                got_logits.append(logits.copy())  # the decode's output is reused
            return
        logits = self._one_token(self.model, self.cache, [r for r, _ in feeds], [t[0] for _, t in feeds],
                                 lambda r: r.cached)
        if ready := self._advance(feeds, got_rows):
            got_logits.append(logits[ready])

    def _one_token(self, model: StepRunner, cache, rows: list[Row], tokens: list[int], length) -> np.ndarray:
        """Logits [len(rows), V] (a copy) of one call over `cache` feeding tokens[i] to rows[i] at position
        length(rows[i]) of its slot, over the slots from the lowest to the highest of `rows`: slots in between, free
        or busy elsewhere, feed a token that lands past what they hold (gptzoo.zoo.step_contract). Callers decoding
        one row call `model.decode` directly: a single stream pays for every list built."""
        lo = min(r.slot for r in rows)
        B = max(r.slot for r in rows) - lo + 1
        at = np.array([r.slot - lo for r in rows], np.int64)
        ids = np.zeros(B, np.int64)
        ids[at] = tokens
        starts = np.array([length(r) if r else 0 for r in self._owner[lo : lo + B]], np.int64)
        return model.decode(cache, lo, ids, starts)[at]

    def _feed(self, feeds: list[tuple[Row, list[int]]], got_rows: list[Row], got_logits: list[np.ndarray]) -> None:
        """One call for rows in neighbouring slots that feed equally many tokens from the start of their slots, or
        for one row."""
        call = Call.fill(feeds[0][0].slot, [t for _, t in feeds], [r.cached for r, _ in feeds])
        logits = self._run(call)
        if ready := self._advance(feeds, got_rows):
            got_logits.append(logits[ready, 0])

    def _advance(self, feeds: list[tuple[Row, list[int]]], got_rows: list[Row]) -> list[int]:
        """The fed tokens are in the cache now; rows with nothing left to feed are ready to sample (their indices
        in `feeds`)."""
        ready = []
        for i, (r, t) in enumerate(feeds):
            r.cached += len(t)
            r.pending = r.pending[len(t) :]
            if not r.pending:
                r.prompting = False
                ready.append(i)
                got_rows.append(r)
        return ready

    # -- speculative decoding ---------------------------------------------------------------------------------
    def _plan(self, single: list[tuple[Row, list[int]]],
              multi: list[tuple[Row, list[int]]]) -> list[tuple[Row, list[int], int]]:
        """Which rows draft this step, and how many tokens at most: taken out of `single` and `multi` (rows feeding
        the end of a prompt or a re-prefilled window verify their proposals in the same call)."""
        d = self.draft
        ending = [f for f in multi if len(f[1]) == len(f[0].pending)]  # rows that get a token this step
        bar = spec.batch_rate(len(single) + len(ending), d.row_cost)
        if bar >= self._ceiling:  # a full enough batch: no row drafts, and asking each costs a step's 0.2-0.3%
            return []
        verify = []
        for feeds in (single, ending):
            for r, t in feeds:
                if r.pace and (k := self._draft_length(r, len(t), bar)):
                    verify.append((r, t, k))
        if verify:
            drafting = {id(f[0]) for f in verify}
            single[:] = [f for f in single if id(f[0]) not in drafting]
            multi[:] = [f for f in multi if id(f[0]) not in drafting]
        return verify

    def _draft_length(self, r: Row, feeding: int, bar: float) -> int:
        """The most tokens the row drafts this step (0: it decodes in the batched call)."""
        d = self.draft
        # proposals must fit the window after what the row feeds, and within max_tokens
        room = min(self.block - r.cached - feeding, r.params.max_tokens - len(r.generated), d.k)
        if room < 1 or not d.adaptive:
            return max(room, 0)
        return room if r.pace.drafts(bar, d.prior) else 0

    def _propose(self, verify: list[tuple[Row, list[int], int]]) -> list[tuple[list[int], list]]:
        """Each drafting row's proposals (and the distributions they were drawn from, above temperature 0). First
        the draft's slot catches up with the row's window, to its newest token (one token usually, the whole window
        after a re-prefill or a pause in drafting); then one batched one-token call per proposal for the rows still
        drafting."""
        d = self.draft
        out: list[tuple[list[int], list]] = [([], []) for _ in verify]
        logits: dict[int, np.ndarray] = {}  # index in verify -> the draft's logits for that row's next proposal
        catch_one = []
        for i, (r, t, _) in enumerate(verify):
            end = len(r.prompt) + len(r.generated)  # the newest token, context[end - 1], goes in first
            lag = end - r.draft_start - r.draft_cached  # the tokens the draft's slot lacks
            if lag > spec.CATCH_UP:  # a re-prefilled window, a pause in drafting: the draft reads the end only
                r.draft_start, r.draft_cached = max(r.start, end - spec.CATCH_UP), 0
                lag = end - r.draft_start
            if lag == 1:
                catch_one.append((i, t[-1]))
            else:
                self.draft_calls += 1
                logits[i] = d.model.extend(self.draft_cache, r.slot, _last(r, lag), r.draft_cached, 1)[0]
                r.draft_cached += lag
        if catch_one:
            logits.update(self._draft_decode(verify, catch_one))
        live = list(range(len(verify)))
        while live:
            feed = []
            for i in live:
                r, _, k = verify[i]
                token, confidence, q = spec.propose(logits[i], r.params, r.rng)
                proposals, qs = out[i]
                proposals.append(token)
                if q is not None:
                    qs.append(q)
                if len(proposals) < k and (not d.adaptive or confidence >= d.confidence):
                    feed.append((i, token))
            live = [i for i, _ in feed]
            if feed:
                logits = self._draft_decode(verify, feed)
        return out

    def _draft_decode(self, verify: list[tuple[Row, list[int], int]],
                      feed: list[tuple[int, int]]) -> dict[int, np.ndarray]:
        """One draft call feeding one token to each row in `feed` ((index in verify, token)) (`_one_token`)."""
        self.draft_calls += 1
        if len(feed) == 1:  # one stream: no arrays to build
            i, token = feed[0]
            r = verify[i][0]
            logits = self.draft.model.decode(self.draft_cache, r.slot, (token,), (r.draft_cached,))
            r.draft_cached += 1
            return {i: logits[0]}
        rows = [verify[i][0] for i, _ in feed]
        logits = self._one_token(self.draft.model, self.draft_cache, rows, [token for _, token in feed],
                                 lambda r: r.draft_cached)
        for r in rows:
            r.draft_cached += 1
        return {i: logits[j] for j, (i, _) in enumerate(feed)}

    def _verify(self, verify: list[tuple[Row, list[int], int]], proposals: list[tuple[list[int], list]]) -> None:
        """The target scores each drafting row's feed and proposals in one call of its own, keeps the prefix it
        agrees with and adds its own next token; both slots roll back to what was kept."""
        for (r, t, _), (props, qs) in zip(verify, proposals, strict=True):
            self.calls += 1
            logits = self.model.extend(self.cache, r.slot, t + props, r.cached, len(props) + 1)
            if r.params.temperature == 0:
                kept, extra = spec.accept_greedy(logits, props)
            else:
                kept, extra = spec.accept(logits, props, qs, r.params, r.rng)
            r.cached += len(t) + len(kept)  # the rejected tail lies past the slot's length now: rolled back
            r.draft_cached = min(r.draft_cached, r.start + r.cached - r.draft_start)
            r.pending, r.prompting = [], False
            r.drafted += len(props)
            r.accepted += len(kept)
            self.stats.drafted += len(props)
            self.stats.accepted += len(kept)
            self.drafted += len(props)
            self.accepted += len(kept)
            r.pace.observe(spec.round_rate(len(kept), len(props), self._round_cost, self._token_cost))
            for token in kept + [extra]:
                r.take(token)
                if r.done:
                    break

    # -- helpers ----------------------------------------------------------------------------------------------
    def _accept(self, rows: list[Row], logits: np.ndarray) -> None:
        """Sample every row's next token from its logits (one row of `logits` each) in one call, then its text."""
        if len(rows) == 1:  # no lists to build for one row (a single stream: every microsecond shows)
            tokens = [sample(logits[0], rows[0].params, rows[0].rng)]
        else:
            tokens = sample_rows(logits, [r.params for r in rows], [r.rng for r in rows])
        for r, token in zip(rows, tokens, strict=True):
            r.take(token)

    def _run(self, call: Call) -> np.ndarray:
        self.calls += 1
        return self.model.run(self.cache, call)


def _last(r: Row, n: int) -> list[int]:
    """The last n tokens of a row's context, without copying the whole of it."""
    return r.generated[-n:] if n <= len(r.generated) else r.context[-n:]


def _runs(feeds: list[tuple[Row, list[int]]]) -> list[list[tuple[Row, list[int]]]]:
    """Split feeds (sorted by slot) into calls: runs of neighbouring slots that feed equally many tokens from the
    start of their slots (fresh prompts, re-prefilled windows), every other feed alone."""
    runs: list[list[tuple[Row, list[int]]]] = []
    for f in feeds:
        last = runs[-1][-1] if runs else None
        fresh = f[0].cached == 0 and last is not None and last[0].cached == 0
        if fresh and f[0].slot == last[0].slot + 1 and len(f[1]) == len(last[1]):
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def generate(
    model: StepRunner,
    tokenizer: Tokenizer,
    prompts: list[str],
    params: SamplingParams | list[SamplingParams],
    policy: str = "half",
    on_text: Callable[[int, str], None] | None = None,
) -> list[Result]:
    """Generate a completion for each prompt, all rows in one batch; `on_text(row, delta)` streams text."""
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


def policy_nll(model: StepRunner, streams: np.ndarray, policy: str) -> float:
    """Mean next-token loss of teacher-forced `streams` [S, N] when the context is managed as `policy` manages it
    in generation (exact: a sliding window of block_size; half: re-prefill half a window when it fills). Measures
    what a context policy costs in quality, on real text."""
    if policy not in POLICIES:
        raise BadValue(f"unknown context policy {policy!r}")
    S, N = streams.shape
    B = model.shape.block_size
    cache, w0, total = model.new_cache(S), 0, 0.0
    everyone = np.ones(S, bool)
    for i in range(N - 1):
        if i - w0 >= B:  # the window is full
            if policy == "exact":
                logits = model.run(cache, Call.fill(0, streams[:, i - B + 1 : i + 1], np.zeros(S, np.int64)))
                total += _nll(logits[:, -1], streams[:, i + 1])
                continue
            w0 = i - B // 2
            model.run(cache, Call.fill(0, streams[:, w0:i], np.zeros(S, np.int64)))
        p = i - w0
        logits = model.run(cache, Call.decode(0, streams[:, i], np.full(S, p), everyone))
        total += _nll(logits[:, -1], streams[:, i + 1])
    return total / (S * (N - 1))


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(targets)), targets].sum())
