"""Generation on any backend of the cached step (a gptzoo.zoo.step_contract.StepRunner: onnxruntime or torch):
prefill, cached decode, nanoGPT-exact context cropping, batching.

A `Batch` holds rows (sequences) that share one KV cache of length S. Rows are left-padded inside it, so one
session call per step decodes every row, and one sampling call samples them all; each row has its own positions,
sampling parameters, random stream and stop sequences. Rows may join (prefilled in their own call, then merged) and
leave between steps: that is what continuous batching in the server builds on.

Context policies, when a row's window (block_size tokens) is full:
- `exact`: as nanoGPT's `generate`, every further token re-runs the last block_size tokens with no cache (the
  positions shift, so no cache stays exact). Greedy output equals nanoGPT's token for token.
- `half`: re-prefill the last block_size/2 tokens once and decode from the cache again until the window fills.
  Far cheaper past the window; the model sees between half and all of the window. See docs/benchmarks.md.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.sampling import SamplingParams, sample, sample_rows
from gptzoo.zoo.step_contract import StepRunner, attention_bias
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
    cached: int = 0  # tokens of this row's window held in the shared cache
    pad: int = 0  # left padding of this row in the shared cache
    uncached: bool = False  # exact policy past the window: recomputed alone every step
    finish_reason: str | None = None  # "stop" or "length" when done
    on_text: Callable[[str], None] | None = None
    tag: object = None  # the caller's handle (e.g. a server request)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def context(self) -> list[int]:
        return self.prompt + self.generated


@dataclass
class Result:
    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int


class Batch:
    def __init__(self, model: StepRunner, tokenizer: Tokenizer, policy: str = "half"):
        if policy not in POLICIES:
            raise BadValue(f"unknown context policy {policy!r}; choose one of: {', '.join(POLICIES)}")
        self.model, self.tok, self.policy = model, tokenizer, policy
        self.block = model.shape.block_size
        self.rows: list[Row] = []
        self.past: list[np.ndarray] = model.empty_past(0)
        self.calls = 0  # session calls made, for tests and profiling

    # -- rows joining and leaving -------------------------------------------------------------------------------
    def new_row(self, prompt_ids: list[int], params: SamplingParams, on_text=None, tag=None) -> Row:
        if not prompt_ids:
            raise BadValue("the prompt is empty")
        rng = np.random.default_rng(params.seed)
        return Row(prompt_ids[-self.block :], params, StopText(self.tok, params.stop), rng, on_text=on_text, tag=tag)

    def add(self, rows: list[Row]) -> None:
        """Prefill `rows` together in one call (left-padded), sample each one's first token, merge them in."""
        if not rows:
            return
        L = max(len(r.prompt) for r in rows)
        ids = np.zeros((len(rows), L), dtype=np.int64)
        pos = np.zeros((len(rows), L), dtype=np.int64)
        pads = np.array([L - len(r.prompt) for r in rows])
        for i, r in enumerate(rows):
            ids[i, pads[i] :] = r.prompt
            pos[i, pads[i] :] = np.arange(len(r.prompt))
        bias = attention_bias(pads, past_len=0, new=L)
        logits, present = self._run(ids, pos, bias, self.model.empty_past(len(rows)))
        for i, r in enumerate(rows):
            r.pad, r.cached = int(pads[i]), len(r.prompt)
        self._merge(rows, present)
        self._accept(rows, logits[:, -1])

    def remove(self, rows: list[Row]) -> None:
        if not rows:
            return  # the common case, every step: indexing would copy the whole cache for nothing
        keep = [i for i, r in enumerate(self.rows) if r not in rows]
        self.rows = [self.rows[i] for i in keep]
        self.past = [p[keep] for p in self.past]
        self._trim()

    # -- one step ---------------------------------------------------------------------------------------------
    def step(self) -> list[Row]:
        """Decode one token for every unfinished row; returns the rows that finished in this step. Per step, not per
        row: one decode call, one re-prefill call for the rows whose window filled, one sampling call."""
        active = [r for r in self.rows if not r.done]
        if not active:
            return []
        full = [r for r in active if r.cached >= self.block and not r.uncached]
        if full and self.policy == "exact":
            for r in full:
                r.uncached = True
        elif full:
            self._reprefill(full)
        uncached = [r for r in active if r.uncached] if self.policy == "exact" else []
        rows, logits = self._decode_cached() if len(uncached) < len(active) else ([], None)
        if uncached:  # exact policy past the window: each row recomputes its window alone
            logits = [] if logits is None else [logits]
            for r in uncached:
                window = np.array([r.context[-self.block :]], dtype=np.int64)
                T = window.shape[1]
                bias = attention_bias(np.zeros(1, int), 0, T)
                out, _ = self._run(window, np.arange(T)[None], bias, self.model.empty_past(1))
                logits.append(out[:, -1])
            rows, logits = rows + uncached, np.concatenate(logits)
        self._accept(rows, logits)
        return [r for r in active if r.done]

    def _decode_cached(self) -> tuple[list[Row], np.ndarray]:
        """One call for all rows: each feeds its last sampled token (not yet in the cache). Returns the rows that
        decoded and their next-token logits."""
        S = self.past[0].shape[2]
        ids = np.array([[r.generated[-1]] for r in self.rows], dtype=np.int64)
        pos = np.array([[min(r.cached, self.block - 1)] for r in self.rows], dtype=np.int64)
        pads = np.array([S if (r.uncached or r.done) else r.pad for r in self.rows])
        logits, self.past = self._run(ids, pos, attention_bias(pads, S, 1), self.past)
        live, rows = [], []
        for i, r in enumerate(self.rows):
            if r.uncached or r.done:
                r.pad = S + 1  # its slot holds nothing it will use
            else:
                r.cached += 1
                live.append(i)
                rows.append(r)
        self._trim()
        return rows, logits[:, -1] if len(rows) == len(self.rows) else logits[live, -1]

    def _reprefill(self, rows: list[Row]) -> None:
        """Recompute the last half window of each of `rows` (without the last token, which the next decode feeds)
        in one call, and put each in its row's cache slot. Every such window has the same length: no padding."""
        T = self.block // 2
        ids = np.array([r.context[-1 - T : -1] for r in rows], dtype=np.int64)
        pos = np.tile(np.arange(T), (len(rows), 1))
        _, present = self._run(ids, pos, attention_bias(np.zeros(len(rows), int), 0, T),
                               self.model.empty_past(len(rows)))
        S = self.past[0].shape[2]
        if T > S:
            self._grow(T - S)
            S = T
        for j, r in enumerate(rows):
            i = self.rows.index(r)
            for p, q in zip(self.past, present, strict=True):  # plain slices: no fancy-index copies
                p[i] = 0.0
                p[i, :, S - T :] = q[j]
            r.pad, r.cached = S - T, T

    # -- helpers ----------------------------------------------------------------------------------------------
    def _accept(self, rows: list[Row], logits: np.ndarray) -> None:
        """Sample every row's next token from its logits (one row of `logits` each) in one call, then its text."""
        if len(rows) == 1:  # no lists to build for one row (a single stream: every microsecond shows)
            tokens = [sample(logits[0], rows[0].params, rows[0].rng)]
        else:
            tokens = sample_rows(logits, [r.params for r in rows], [r.rng for r in rows])
        for r, token in zip(rows, tokens, strict=True):
            r.generated.append(token)
            delta = r.text.push(token)
            if r.text.stopped:
                r.finish_reason = "stop"
            elif len(r.generated) >= r.params.max_tokens:
                r.finish_reason = "length"
                delta += r.text.finish()
            if delta and r.on_text:
                r.on_text(delta)

    def _run(self, ids, pos, bias, past):
        self.calls += 1
        return self.model.step(ids, pos, bias.astype(np.float32, copy=False), past)

    def _merge(self, rows: list[Row], present: list[np.ndarray]) -> None:
        S_old, S_new = self.past[0].shape[2], present[0].shape[2]
        if S_new > S_old:
            self._grow(S_new - S_old)
        elif S_old > S_new:
            present = [np.pad(p, ((0, 0), (0, 0), (S_old - S_new, 0), (0, 0))) for p in present]
            for r in rows:
                r.pad += S_old - S_new
        self.past = [np.concatenate([a, b], axis=0) for a, b in zip(self.past, present, strict=True)]
        self.rows += rows

    def _grow(self, n: int) -> None:
        self.past = [np.pad(p, ((0, 0), (0, 0), (n, 0), (0, 0))) for p in self.past]
        for r in self.rows:
            r.pad += n

    def _trim(self) -> None:
        """Drop cache columns that are padding for every row, so S stays near the longest live window."""
        if not self.rows:
            self.past = self.model.empty_past(0)
            return
        m = min(r.pad for r in self.rows)
        if m > 0:
            self.past = [np.ascontiguousarray(p[:, :, m:]) for p in self.past]
            for r in self.rows:
                r.pad -= m


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
    batch = Batch(model, tokenizer, policy)
    rows = []
    for i, (p, sp) in enumerate(zip(prompts, params_list, strict=True)):
        cb = (lambda d, i=i: on_text(i, d)) if on_text else None
        rows.append(batch.new_row(tokenizer.encode(p), sp, on_text=cb))
    batch.add(rows)
    batch.remove([r for r in rows if r.done])
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
    zeros = np.zeros(S, int)
    past, w0, total = model.empty_past(S), 0, 0.0
    for i in range(N - 1):
        if i - w0 >= B:  # the window is full
            if policy == "exact":
                win = streams[:, i - B + 1 : i + 1]
                logits, _ = model.step(win, np.broadcast_to(np.arange(B), (S, B)).copy(), attention_bias(zeros, 0, B),
                                       model.empty_past(S))
                total += _nll(logits[:, -1], streams[:, i + 1])
                continue
            w0 = i - B // 2
            T = i - w0
            _, past = model.step(streams[:, w0:i], np.broadcast_to(np.arange(T), (S, T)).copy(),
                                 attention_bias(zeros, 0, T), model.empty_past(S))
        p = i - w0
        logits, past = model.step(streams[:, i : i + 1], np.full((S, 1), p), attention_bias(zeros, p, 1), past)
        total += _nll(logits[:, -1], streams[:, i + 1])
    return total / (S * (N - 1))


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(targets)), targets].sum())
