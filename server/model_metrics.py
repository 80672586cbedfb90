"""One model's series: the labelled children its workers write, created once, counted, and ended with the model.

Every worker holds a `ModelMetrics` for its labels (model, layers). Each series it creates is recorded under those
labels, and when the last worker holding them is released (the live zoo reaped it, or the server stopped) every
series with them ends: counters and histograms too, not only gauges, so a zoo that churns through variants keeps the
series of the variants it has now, not of every id it ever saw (issue 22: 1,000 added and removed variants had left
~170 series each, 14 MB per scrape). A worker dropped without a release (a failed new version replaced by the next
one) is caught when it is garbage-collected. The model-wide gauges (ready, validation loss, info) are the router's:
it ends them when the model leaves its table.

The GenAI series (gptzoo.server.genai) are created and ended the same way, under the labels of the worker that ran
the request, though they name the variant in labels of their own (gen_ai_response_model): `_labelled`.

In multiprocess mode prometheus_client cannot remove a series: gauges are set to 0 there, the rest stays until the
server restarts (README, "Metrics")."""

from __future__ import annotations

import os
import threading
import weakref
from collections import Counter

from gptzoo.server import genai, metrics
from gptzoo.server.genai import GenAiChildren
from gptzoo.server.latency import Budget

Key = tuple[str, str]  # (model, layers)

# Series per variant (samples with its `model` label in a scrape, the router's ready/loss/info gauges included): 203
# once it serves, 237 when it drafts (two more step phases and the pair's counters), plus one per distinct outcome of
# its requests (a finish reason or an error code: about 15 can occur); 6 for a variant that cannot load (its state
# and refusals). docs/benchmarks.md ("Metrics that end with their model") has the figures; tests check the bound.
# The GenAI series come on top: genai.SERIES_PER_NAME per name the variant is reached by (its id, auto, its family).
SERIES_PER_VARIANT = 260

_lock = threading.RLock()
_held: Counter[Key] = Counter()  # labels -> workers holding them
_series: dict[Key, set[tuple[object, tuple[str, ...]]]] = {}  # labels -> (metric, its label values)
_gone: list[Key] = []  # labels of ModelMetrics garbage-collected unreleased (appended by a finalizer: no lock there)


def _multiprocess() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def _child(key: Key, metric, *extra: str):
    """`metric`'s child for these labels, recorded so that it ends with them."""
    return _labelled(key, metric, (*key, *extra))


def _labelled(key: Key, metric, values: tuple[str, ...]):
    """`metric`'s child for label values `values` (not led by `key`: the GenAI series name the model in labels of
    their own), recorded so that it ends with `key`."""
    with _lock:
        _series.setdefault(key, set()).add((metric, values))
        return metric.labels(*values)


def _unhold(key: Key) -> None:
    with _lock:
        _held[key] -= 1
        if _held[key] > 0:
            return
        del _held[key]
        for metric, values in _series.pop(key, ()):
            if not _multiprocess():
                metric.remove(*values)
            elif metric in metrics.WORKER_GAUGES:
                metric.labels(*values).set(0)


def reap_forgotten() -> None:
    """End the labels of workers that were dropped without a release (see `ModelMetrics.release`)."""
    with _lock:  # (two threads must not both pop the last one)
        while _gone:
            _unhold(_gone.pop())


def count_outcome(labels: dict[str, str], outcome: str) -> None:
    """A completion request's outcome, under its model's labels while a worker holds them (a request that ends
    after its model was removed and unloaded is not counted: its series are gone) or under no model's."""
    key = (labels["model"], labels["layers"])
    if not any(key):
        metrics.REQUESTS.labels(*key, outcome).inc()
        return
    with _lock:
        if key in _held:
            _child(key, metrics.REQUESTS, outcome).inc()


class ModelMetrics:
    """One model's labelled children, looked up once: `labels()` costs a dict build and a lock per call, and the
    worker touches these on every decode step.

    Gauges are one worker's share: each `set_*` adds the change since this worker's last value, so while a reloaded
    model's old session finishes its requests beside the new one the gauges hold both, and `zero` (the worker's
    thread ended) takes its share back out."""

    def __init__(self, labels: dict[str, str], family: str = "", serves: bool = True):
        """`family`: the label its routing and budget counters carry ("" for none); `serves`: the worker loads."""
        key = self._key = (labels["model"], labels["layers"])
        reap_forgotten()
        with _lock:
            _held[key] += 1

        def one(metric, *extra: str):
            return _child(key, metric, *extra)

        self._one = one
        # counters exist at 0 from the start, so dashboards show a zero rate rather than no data
        self.refused = {r: one(metrics.REFUSED, r) for r in metrics.REFUSAL_REASONS}
        if serves:  # a worker that will not load (a broken card, no export, unloaded) has only its refusals
            self.waiting, self.running = one(metrics.WAITING), one(metrics.RUNNING)
            self.batch_size, self.queue = one(metrics.BATCH_SIZE), one(metrics.QUEUE)
            self.ttft, self.itl, self.e2e = one(metrics.TTFT), one(metrics.ITL), one(metrics.E2E)
            self.prompt_tokens, self.generation_tokens = one(metrics.PROMPT_TOKENS), one(metrics.GENERATION_TOKENS)
            self.prefill_time = one(metrics.STEP_TIME, "prefill")
            self.decode_time = one(metrics.STEP_TIME, "decode")
            self.prefill_tokens = one(metrics.PREFILL_TOKENS)
            self.slots, self.slots_used = one(metrics.CACHE_SLOTS), one(metrics.CACHE_SLOTS_USED)
            self.cache_bytes = one(metrics.CACHE_BYTES)
            self.tpot, self.predicted_tpot = one(metrics.TPOT), one(metrics.PREDICTED_TPOT)
            self.load_time = one(metrics.LOAD_TIME)
            self.cancelled = one(metrics.CANCELLED)
            self.loads = {o: one(metrics.LOADS, o) for o in metrics.LOAD_OUTCOMES}
            for reason in metrics.ROUTE_REASONS:  # counted on the HTTP side, under the worker's family
                one(metrics.ROUTES, family, reason)
            for result in metrics.BUDGET_RESULTS:
                one(metrics.BUDGET, family, result)
        self._genai: dict[str, GenAiChildren] = {}  # the request's model name -> the GenAI series' children
        self._mine: dict[object, float] = {}  # gauge child -> this worker's share
        self._lock = threading.Lock()  # the worker thread sets, whoever ends the worker releases
        self.spec_drafted = self.spec_accepted = self.draft_time = self.verify_time = None  # set_draft
        self._end = weakref.finalize(self, _gone.append, key)

    def set_draft(self, draft: str) -> None:
        """The worker drafts with variant `draft`: its speculative-decoding series exist from now on (at 0)."""
        self.spec_drafted = self._one(metrics.SPEC_DRAFTED, draft)
        self.spec_accepted = self._one(metrics.SPEC_ACCEPTED, draft)
        self.draft_time = self._one(metrics.STEP_TIME, "draft")
        self.verify_time = self._one(metrics.STEP_TIME, "verify")

    # -- gauges: this worker's share ----------------------------------------------------------------------------
    def _share(self, gauge, value: float) -> None:
        with self._lock:
            delta = value - self._mine.get(gauge, 0)
            self._mine[gauge] = value
        if delta:
            gauge.inc(delta)

    def set_waiting(self, jobs: int) -> None:
        self._share(self.waiting, jobs)

    def set_running(self, rows: int) -> None:
        """Requests being decoded, each holding one cache slot."""
        self._share(self.running, rows)
        self._share(self.slots_used, rows)

    def set_cache(self, slots: int, nbytes: int) -> None:
        self._share(self.slots, slots)
        self._share(self.cache_bytes, nbytes)

    def zero(self) -> None:
        """The worker's thread ended: its requests and its cache are gone from the gauges (idempotent)."""
        for gauge in list(self._mine):
            self._share(gauge, 0)

    def release(self) -> None:
        """The worker is gone for good: `zero`, and once no other worker holds these labels, every series with them
        ends (idempotent)."""
        self.zero()
        if self._end.detach() is not None:
            _unhold(self._key)
        reap_forgotten()

    # -- what the worker counts ---------------------------------------------------------------------------------
    def stepped(self, st) -> None:
        """One engine step's calls (a `StepStats`)."""
        if st.prefill_tokens:
            self.prefill_time.observe(st.prefill_seconds)
            self.prefill_tokens.observe(st.prefill_tokens)
        if st.decode_rows:
            self.batch_size.observe(st.decode_rows)
            self.decode_time.observe(st.decode_seconds)
        if st.verify_rows:
            self.draft_time.observe(st.draft_seconds)
            self.verify_time.observe(st.verify_seconds)
            self.spec_drafted.inc(st.drafted)
            self.spec_accepted.inc(st.accepted)

    def account(self, rows, t: float) -> None:
        """Latency metrics for the tokens that appeared in `rows` (their tags are the jobs) since the last call."""
        fresh = 0
        for r in rows:
            job, n = r.tag, len(r.generated)
            if n == job.seen:
                continue
            if job.seen == 0:
                self.ttft.observe(t - job.arrival)
                job.first_token_at = t
            else:
                self.itl.observe(t - job.last_token_at)
            fresh += n - job.seen
            job.seen, job.last_token_at = n, t
        if fresh:
            self.generation_tokens.inc(fresh)

    def genai(self, requested: str) -> GenAiChildren:
        """The GenAI series of requests that named `requested` and ran here (gptzoo.server.genai)."""
        if (g := self._genai.get(requested)) is None:
            key, model = self._key, self._key[0]
            g = self._genai[requested] = GenAiChildren(genai.label_values(requested or model, model),
                                                       lambda metric, *values: _labelled(key, metric, values))
        return g

    def admitted(self, job, now: float) -> None:
        """A job took a batch slot: its time in the queue."""
        job.admitted_at = now
        self.queue.observe(now - job.arrival)
        self.prompt_tokens.inc(len(job.prompt_ids))

    def failed(self, job, error: str, now: float) -> None:
        """A job that ended without its answer: refused, failed, cut off, or its client left (`error`, the code)."""
        self.genai(job.requested).failed(error, now - job.arrival)

    def finished(self, job, now: float, tokens: int) -> None:
        """A job that generated to its end: its latency, its GenAI series, and its budget's verdict when it carried
        one. Both sets of series get the same values (one clock)."""
        e2e = now - job.arrival
        self.e2e.observe(e2e)
        tpot = (job.last_token_at - job.first_token_at) / (tokens - 1) if tokens > 1 else None
        if tpot is not None:
            self.tpot.observe(tpot)
        ttft = job.first_token_at - job.arrival if job.first_token_at else None
        self.genai(job.requested).succeeded(e2e, ttft, tpot, len(job.prompt_ids), tokens)
        budget: Budget = job.budget
        if budget and job.first_token_at:
            met = budget.met(tpot, job.first_token_at - job.arrival)
            self._one(metrics.BUDGET, job.family, metrics.WITHIN if met else metrics.OVER).inc()
