"""One model, one thread: load the ONNX session, warm it up, then decode requests with continuous batching.

onnxruntime's `run` blocks and `Batch` is not thread-safe, so a dedicated thread owns both. Requests (`Job`s,
gptzoo.server.job) queue up; between steps the thread admits waiting jobs into the running Batch (each takes a free
slot of the model's KV cache, max_batch_size slots allocated once) and drops finished or cancelled ones; every step
feeds prompts in chunks (prefill_chunk tokens at most) beside the rows that decode, so an arrival neither waits for
nor stalls the others. That loop is gptzoo.server.engine; this module is the worker's life cycle (load, warm-up,
drain, stop) and its door (`submit`). Results go back to the job's event loop as typed events (TextDelta while
streaming, then Done or Failed), read with `Job.events()`. The worker measures latency, tokens and refusals; the
request's outcome is counted once, on the HTTP side (gptzoo.server.outcomes).

Refusals (queue full, queue timeout, shutting down: gptzoo.server.refusals) carry Retry-After and count in
gptzoo_requests_refused. On shutdown the worker drains: no new jobs, queued and running ones go on until the drain
deadline. A worker the live zoo retires (its variant was re-exported, removed or unloaded: gptzoo.server.reload) is
out of the routing table already; it finishes every job it holds, then is stopped.

A variant the server drafts for (`gptzoo serve --draft`) gets its draft when its worker loads: the draft's session and
slot cache belong to this worker and its Batch decodes speculatively (gptzoo.server.drafts says which draft, and
what happens when the store changes); each step's proposals and kept tokens go to the gptzoo_spec_* counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from gptzoo.server import metrics
from gptzoo.server.drafts import DraftPlan
from gptzoo.server.engine import Engine
from gptzoo.server.events import Event
from gptzoo.server.job import Job
from gptzoo.server.latency import TokenTime
from gptzoo.server.model_metrics import ModelMetrics
from gptzoo.server.refusals import RETRY_BUSY, RETRY_SHUTDOWN, Refused
from gptzoo.server.settings import Settings
from gptzoo.zoo import context
from gptzoo.zoo.card import Card
from gptzoo.zoo.errors import first_line
from gptzoo.zoo.generate import Batch
from gptzoo.zoo.runtime import OnnxModel, open_variant
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.sources import sha256_file
from gptzoo.zoo.speculative import Draft, check_policy
from gptzoo.zoo.store import Broken, Variant, card_family, file_stamp, revision
from gptzoo.zoo.tokenizers import Tokenizer, from_spec

log = logging.getLogger("gptzoo.server")

LOADING, READY, FAILED, NOT_EXPORTED, UNLOADED = "loading", "ready", "failed", "not_exported", "unloaded"
CALIBRATION_ROUNDS, TIMED_STEPS = 3, 2  # the latency prior: the fastest of 6 steps at each occupancy


class ModelWorker(Engine):
    def __init__(self, variant: Variant | Broken, settings: Settings, *, unloaded: str | None = None,
                 on_loaded: Callable[[ModelWorker], None] | None = None, drafts: DraftPlan | None = None):
        """A Broken variant (its card cannot be used) gets a worker that is failed from the start, so it is listed
        with its reason; `unloaded` (the reason) makes a placeholder that loads nothing. `on_loaded` is called from
        the worker's thread once loading ended, either way (before `loaded` is set). `drafts`: the server's
        speculative decoding, whose draft for this variant the worker opens when it loads (gptzoo.server.drafts)."""
        self.settings, self.drafts = settings, drafts
        self.draft_id: str | None = None  # the variant drafting for this one, once loaded (None: none drafts)
        self.entry = variant  # what the store held when this worker was made
        self.variant, self.card = (variant, variant.card) if isinstance(variant, Variant) else (None, None)
        self.id, self.dir = variant.id, variant.dir
        self.labels = metrics.model_labels(self.id, self.card.n_layer if self.card else None)
        # the store entry this worker stands for, to compare with what a later scan finds
        self.revision, self.file_stamp = revision(variant), file_stamp(variant)
        facts = self.card.onnx if self.card else None
        self.sha256: str | None = facts.sha256 if facts else None  # of its file (computed if the card has none)
        self.loaded_at: datetime | None = None
        if unloaded:
            self.state, self.reason = UNLOADED, unloaded
        elif isinstance(variant, Broken):
            self.state, self.reason = FAILED, variant.reason
        elif self.revision != ("not_exported",):
            self.state, self.reason = LOADING, None
        else:
            self.state, self.reason = NOT_EXPORTED, f"not exported (run `gptzoo export --model {self.id}`)"
        family = card_family(self.card) or ""
        self.m = ModelMetrics(self.labels, family, serves=self.state == LOADING)
        self.on_loaded = on_loaded
        self.retired = False  # out of the routing table (gptzoo.server.reload): finishes its jobs, then stops
        self._jobs = 0  # submitted and not ended yet (queued, being admitted or running), under _cv
        self.provider: str | None = None
        self.model: OnnxModel | None = None
        self.tokenizer: Tokenizer | None = None
        self._batch: Batch | None = None
        self.loaded = threading.Event()  # set once loading ended, either way
        self._pending: deque[Job] = deque()
        self._taken = 0  # cache slots held or promised to jobs leaving the queue (under _cv; stale high, never low)
        self._cv = threading.Condition()
        self._stopping = False
        self._drain_by: float | None = None  # perf_counter deadline once draining (shutdown signal)
        self._thread: threading.Thread | None = None
        self.peak_rows = 0  # the most rows decoded together so far (tests and tuning)
        self.latency = TokenTime()  # live time per token by occupancy, for depth routing
        self._stepped_at = 0.0  # perf_counter time the last decode step ended; 0 after a pause
        # events of the current step by destination loop; only the worker thread touches it (no lock)
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[Job, Event]]] = {}
        self._urgent = False  # the outbox holds a first token or an ending: hand it off now
        self._handed_at = 0.0  # perf_counter time of the last hand-off

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def in_flight(self) -> int:
        """Requests it holds: queued, being admitted or running."""
        with self._cv:
            return self._jobs

    @property
    def alive(self) -> bool:
        """Its thread runs (loading or serving)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def block_size(self) -> int:
        """The model's context window (tokens it reads); only for a ready worker."""
        return self.model.shape.block_size

    @property
    def occupancy(self) -> tuple[int, int]:
        """(rows decoding, requests queued) now; read without the lock: a routing estimate, not an invariant."""
        return (len(self._batch.rows) if self._batch else 0), len(self._pending)

    def _beyond_free(self) -> int:
        """Queued jobs beyond the free slots: those that will wait. Jobs the free slots take at the next step are
        not waiting (issue 22: counted, they turned an idle model's bursts into 429s and needless fallbacks)."""
        return len(self._pending) - max(self.settings.max_batch_size - self._taken, 0)

    @property
    def queue_full(self) -> bool:
        return self._beyond_free() >= self.settings.max_waiting

    def encode(self, text: str) -> list[int]:
        """The prompt's token ids; UnknownCharacters for text outside a char model's vocabulary."""
        return self.tokenizer.encode(text)

    # -- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.state != LOADING:
            self.loaded.set()
            return
        # daemon: a thread stuck in a long session call must not keep the process alive at exit
        self._thread = threading.Thread(target=self._run, name=f"gptzoo-{self.id}", daemon=True)
        self._thread.start()

    def drain(self, grace: float) -> None:
        """Take no new jobs; queued and running ones may finish within `grace` seconds, then get a 503."""
        with self._cv:
            if self._drain_by is None:
                self._drain_by = time.perf_counter() + grace
            self._cv.notify()

    def stop(self) -> None:
        """End the thread without waiting: queued and running jobs get 503 (the live zoo stops a worker once idle)."""
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def close(self, timeout: float = 10.0) -> None:
        self.stop()
        if self._thread:
            self._thread.join(timeout)
        self.m.release()

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            self._load()
            self.state, self.loaded_at = READY, datetime.now(UTC)
            took = time.perf_counter() - t0
            self.m.loads["loaded"].inc()
            self.m.load_time.observe(took)
            log.info("%s: ready on %s (sha256 %s…, loaded and warmed up in %.0f ms)", self.id, self.provider,
                     (self.sha256 or "?")[:12], took * 1e3)
        except Exception as e:  # anything: a broken variant must not take the others down
            # /readyz is public: name files by variant id, not by their place on the server's disk
            reason = first_line(e).replace(str(self.dir), self.id)
            self.state, self.reason = FAILED, reason.replace(str(self.dir.parent) + os.sep, "")
            self.m.loads["failed"].inc()
            log.warning("%s: not ready: %s", self.id, self.reason)
        finally:
            if self.on_loaded:
                self.on_loaded(self)
            self.loaded.set()
        try:
            if self.ready:
                self._serve()
        finally:
            self.m.zero()

    def _load(self) -> None:
        tokenizer = from_spec(self.card.tokenizer)
        # refuses a file that is missing, corrupt, replaced, or exported from another variant
        # (the card already checked that its tokenizer fits its vocabulary, and open_variant the file against it)
        model = open_variant(self.variant, self.settings.device, self.settings.threads)
        # the context policy this variant runs under (its family's default unless set); slide on gpt2: BadValue
        self._batch_policy = context.resolve(self.settings.policy, model.shape)
        if not self.sha256:  # a card without the file's sha256: /admin/models still tells which file serves
            self.sha256 = sha256_file(self.variant.onnx_path)
        self.model, self.tokenizer, self.provider = model, tokenizer, model.provider
        draft = self._open_draft()
        self._batch = self._new_batch(draft)  # the serving cache, allocated before the model says it is ready
        self._warm_up()

    def _open_draft(self) -> Draft | None:
        """The draft for this variant's batch, if the server drafts for it and the draft opens; a draft that does
        not (gone from the store, not exported, another vocabulary, broken) is a warning: the variant serves
        without drafting."""
        if self.drafts is None:
            return None
        try:
            check_policy(self._batch_policy)
            variant, why = self.drafts.drafts_for(self.variant)
            if variant is None:
                if why:
                    log.warning("%s: serving without a draft: %s", self.id, why)
                return None
            draft, warning = self.drafts.open(self.variant, self.model, variant, self.settings.device,
                                              self.settings.threads)
        except Exception as e:  # anything: a draft only ever makes its target faster, never unavailable
            log.warning("%s: serving without a draft: %s", self.id,
                        first_line(e).replace(str(self.dir.parent) + os.sep, ""))
            return None
        if warning:
            log.warning("%s: %s", self.id, warning)
        self.draft_id = variant.id
        self.m.set_draft(variant.id)
        log.info("%s: drafted by %s (at most %d tokens a round)", self.id, variant.id, draft.k)
        return draft

    def _warm_up(self) -> None:
        """Real prefill and decode steps on the serving cache, so the first request pays no one-off session costs,
        with one row and with every slot taken; the decode steps after the first are timed: the latency prior for
        depth routing (rows that do not draft: that is the step it predicts). The prior is the model alone, but at
        start its neighbours load beside it: the rounds alternate the occupancies and the fastest step of each
        counts (a one-step prior once ranked a 4-layer variant faster than a 1-layer one). With a draft, one
        drafting row then warms up the draft's session and the verification."""
        batch, full = self._batch, self._batch.slots
        times: dict[int, list[float]] = {}
        for _ in range(CALIBRATION_ROUNDS):
            for n in dict.fromkeys((1, full)):
                rows = [batch.new_row([0, 0], SamplingParams(max_tokens=2 + TIMED_STEPS, temperature=0),
                                      draft=False) for _ in range(n)]
                batch.add(rows)
                batch.step()  # the prompts, and the first tokens
                batch.step()  # the first decode at this many rows (its bindings are made here)
                for _ in range(TIMED_STEPS):
                    t0 = time.perf_counter()
                    batch.step()
                    times.setdefault(n, []).append(time.perf_counter() - t0)
                batch.remove(rows)
        self.latency.calibrate(times[1], times[full], full)
        if batch.draft is not None:
            row = batch.new_row([0, 0], SamplingParams(max_tokens=2 * batch.draft.k + 2, temperature=0))
            batch.add([row])
            while not row.done:
                batch.step()
            batch.remove([row])

    def info_labels(self) -> dict[str, str]:
        """gptzoo_model_info's labels for this worker (the router publishes them for the worker that serves)."""
        card = self.card
        return {**self.labels, "arch": card.arch if card else "", "provider": self.provider or "none",
                "params": str(card.params or "") if card else "",
                "exporter": (card.onnx.exporter or "") if card and card.onnx else "",
                "quantization": (card.quantization or "none") if card else "none", "sha256": self.sha256 or ""}

    # -- requests ---------------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue the job for this model's thread; raises Refused (full queue, shutting down, replaced)."""
        with self._cv:
            if self._stopping and self.retired and self._drain_by is None:
                # the request chose this worker, then waited (a long prompt is tokenized off the event loop) while
                # the live zoo replaced or unloaded it and, idle, stopped it
                raise self._refusal("model_not_ready", f"{self.id} was reloaded or unloaded while this request was "
                                    "being read; retry", RETRY_BUSY)
            if self._stopping or self._drain_by is not None:
                raise self._refusal("shutting_down", "the server is shutting down; retry later", RETRY_SHUTDOWN)
            if (waiting := self._beyond_free()) >= self.settings.max_waiting:
                raise self._refusal("overloaded", f"{self.id} has {waiting} requests waiting already (the queue "
                                    "limit); retry later", RETRY_BUSY)
            job.deadline = job.arrival + self.settings.request_timeout
            job.found_full = sum(self.occupancy) >= self.settings.max_batch_size
            self._pending.append(job)
            self._jobs += 1
            self.m.set_waiting(len(self._pending))
            self._cv.notify()

    def _refusal(self, code: str, message: str, retry_after: str) -> Refused:
        self.m.refused[code].inc()
        return Refused(code, message, retry_after)

    def _new_batch(self, draft: Draft | None = None) -> Batch:
        s = self.settings
        batch = Batch(self.model, self.tokenizer, self._batch_policy, slots=s.max_batch_size,
                      prefill_chunk=s.prefill_chunk, draft=draft)
        self.m.set_cache(batch.slots, batch.cache_bytes)
        return batch


def created_at(card: Card | None) -> int:
    """Unix time of the export (or the last training update): OpenAI's `created`; 0 when unknown."""
    if card is None:
        return 0
    for stamp in (card.onnx.exported_at if card.onnx else None, card.updated):
        try:
            return int(datetime.fromisoformat(stamp).timestamp())
        except (TypeError, ValueError):
            continue
    return 0
