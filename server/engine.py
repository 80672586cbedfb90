"""The engine loop of a model's worker thread: serve (wait, sweep the queue, admit), advance (one step of the
Batch), retire (rows that ended leave), and the way a step's events go back to the event loops.

A step's events for every row travel together: one `loop.call_soon_threadsafe` per event loop per step (each one
is a write to the loop's self-pipe, a system call and a wake-up), not one per token per row.

`Engine` is the half of gptzoo.server.worker.ModelWorker that runs on the model's own thread, after loading; the
worker's other half (loading, warm-up, `submit`) and its state (`_cv`, `_pending`, `_batch`, the outbox, the
metrics) live in worker.py. Outcomes are domain ones (a `Failed` event with its code and Retry-After): the HTTP side
maps them to statuses (gptzoo.server.errors)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque

from gptzoo.server import ttft_trace
from gptzoo.server.events import Done, Event, Failed, TextDelta
from gptzoo.server.genai import CANCELLED
from gptzoo.server.job import Job, deliver
from gptzoo.server.refusals import RETRY_BUSY, RETRY_SHUTDOWN
from gptzoo.zoo.errors import first_line
from gptzoo.zoo.generate import Batch, Row

log = logging.getLogger("gptzoo.server")

# A step predicted at least this long hands its new rows' first tokens out before the others' decode call (issue 27:
# a wide model's decode call is tens of ms of every first token); a shorter one hands out once, at its end, since
# each hand-off wakes the event loop on the core the step needs (docs/benchmarks.md).
EARLY_HAND_OFF_S = 0.005


class Engine:
    """The worker thread's loop (mixed into ModelWorker, whose attributes it uses)."""

    steps = 0  # steps run (an instance attribute from the first step on)

    def _serve(self) -> None:
        batch = self._batch
        while True:
            with self._cv:
                self._taken = len(batch.rows)  # rows that left since the last step freed theirs
                while not self._pending and not batch.rows and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    break
                now = time.perf_counter()
                cut = self._drain_by is not None and now >= self._drain_by
                if cut and (self._pending or batch.rows):
                    log.warning("%s: shutdown deadline passed; ending %d running and %d queued request(s)", self.id,
                                len(batch.rows), len(self._pending))
                self._sweep(now, cut)
                room = self.settings.max_batch_size - len(batch.rows)
                new = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
                self._taken += len(new)
                self.m.set_waiting(len(self._pending))
            try:
                if cut:
                    self._retire(batch, now, cut=True)
                self._advance(batch, new)
            except Exception as e:  # a failed session call: fail what is in flight, keep serving
                log.exception("%s: generation failed", self.id)
                for job in [r.tag for r in batch.rows] + new:
                    self._fail(job, f"generation failed: {first_line(e)}", "generation_failed")
                batch.remove(list(batch.rows))  # their slots are free again: the cache itself is reused
            self.m.set_running(len(batch.rows))
            self._hand_off(force=not batch.rows)  # before the thread may sleep: nothing stays behind
        with self._cv:
            left = [r.tag for r in batch.rows] + list(self._pending)
            self._pending.clear()
        for job in left:
            self._fail(job, "the server stopped before this request finished", "shutting_down")
        self._hand_off(force=True)
        self._batch = None  # the KV cache goes with the worker (and the session once nothing refers to it)

    def _post(self, job: Job, event: Event) -> None:
        if not isinstance(event, TextDelta) or not job.streaming:
            self._urgent = True  # a first token (time to first token) or an ending is never held back
            job.streaming = True
            if job.trace is not None and not job.trace.sampled:
                job.trace.sampled = time.perf_counter()
        self._outbox.setdefault(job.loop, []).append((job, event))

    def _hand_off(self, force: bool = False) -> None:
        """What the steps produced, to the event loops that wait for it: one cross-thread call per loop. Text in the
        middle of streams waits until `stream_interval` passed since the last hand-off (the stream sends what piled
        up as one chunk): a hand-off wakes the event loop, which on a busy core costs more than a small model's step."""
        if not self._outbox:
            return
        now = time.perf_counter()
        if not (force or self._urgent or now - self._handed_at >= self.settings.stream_interval):
            return
        outbox, self._outbox, self._urgent, self._handed_at = self._outbox, {}, False, now
        if ttft_trace.ON:
            for events in outbox.values():
                for job, _ in events:
                    if job.trace is not None and not job.trace.handed:
                        job.trace.handed = now
        for loop, events in outbox.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
                loop.call_soon_threadsafe(deliver, events)
        # Give the core to the loops just woken: on a core they share with this thread they would otherwise wait
        # for the scheduler's next turn (milliseconds) before sending, which is time to first token and the tail of
        # every stream (docs/benchmarks.md).
        if hasattr(os, "sched_yield"):
            os.sched_yield()

    def _sweep(self, now: float, cut: bool) -> None:
        """Under the lock, once per step: queued jobs whose client left, whose time is up, or (past the drain
        deadline) all of them leave the queue, so they stop holding slots."""
        keep: deque[Job] = deque()
        for job in self._pending:
            if job.cancelled:
                self._finish(job, now)
            elif cut:
                self._refuse(job, "the server shut down before this request got a batch slot", "shutting_down",
                             RETRY_SHUTDOWN)
            elif now >= job.deadline:
                self._refuse(job, f"{self.id} is busy: the request waited {now - job.arrival:.1f} s for a "
                                       f"batch slot, past this server's request timeout of "
                                       f"{self.settings.request_timeout:g} s; retry later", "queue_timeout",
                             RETRY_BUSY)
            else:
                keep.append(job)
        self._pending = keep

    def _advance(self, batch: Batch, new: list[Job]) -> None:
        """Admit `new` (each takes a free slot), run one step (prompt chunks and one token for every decoding row),
        hand back what finished."""
        now = time.perf_counter()
        rows = []
        for job in new:
            self.m.admitted(job, now)
            if job.found_full:
                self.latency.observe_queue(now - job.arrival)
            on_text = (lambda delta, job=job: self._post(job, TextDelta(delta))) if job.stream else None
            rows.append(batch.new_row(job.prompt_ids, job.params, on_text=on_text, tag=job, draft=job.speculative))
        batch.add(rows)
        self.peak_rows = max(self.peak_rows, len(batch.rows))
        traced = bool(new) and new[0].trace is not None
        if traced:
            self._admitted(new, now, len(batch.rows))
        slow = new and self.latency.tpot(len(batch.rows), now) >= EARLY_HAND_OFF_S  # False while unknown (nan)
        batch.step(self._hand_off if slow else None)
        t = time.perf_counter()
        self.steps += 1
        st = batch.stats
        if traced:
            for job in new:  # the first frames may be out already: the trace is written later (ttft_trace)
                job.trace.prefill_s, job.trace.decode_s = st.prefill_seconds, st.decode_seconds
        self.m.stepped(st)
        self.latency.observe_prefill(st.prefill_tokens, st.prefill_seconds)
        if st.decode_rows and self._stepped_at:  # a row's time per token: from one step's end to the next one's
            self.latency.observe(st.decode_rows, t - self._stepped_at, t)
        self._stepped_at = t if st.decode_rows else 0.0
        self.m.account(batch.rows, t)
        self._retire(batch, time.perf_counter())

    def _admitted(self, new: list[Job], now: float, rows: int) -> None:
        """GPTZOO_TTFT_TRACE: the admitted jobs' queue wait and the step that makes their first tokens."""
        for job in new:
            tr = job.trace
            tr.admitted, tr.rows, tr.new, tr.steps_waited = now, rows, len(new), self.steps - tr.steps_at_queue

    def _retire(self, batch: Batch, now: float, cut: bool = False) -> None:
        """Rows leave the batch when done, cancelled (client gone) or cut off by the shutdown. The gauges move before
        the answers go out, so whoever holds an answer sees the metrics that include it."""
        leaving = [r for r in batch.rows if r.done or r.tag.cancelled or cut]
        if not leaving:
            return
        batch.remove(leaving)
        self.m.set_running(len(batch.rows))
        for r in leaving:
            if r.done:
                self._finish(r.tag, now, r)
            elif r.tag.cancelled:
                self._finish(r.tag, now)
            else:
                self._fail(r.tag, "the server shut down before this request finished", "shutting_down")

    def _ended(self, job: Job) -> bool:
        """Marks the job finished; False when it was already."""
        if job.finished:
            return False
        job.finished = True
        with self._cv:
            self._jobs -= 1
        return True

    def _finish(self, job: Job, now: float, row: Row | None = None) -> None:
        """A row that generated to its end (`row`), or a job whose client left (no row: nobody to answer)."""
        if not self._ended(job):
            return
        if row is None:
            self.m.cancelled.inc()
            self.m.failed(job, CANCELLED, now)
            return
        self.m.finished(job, now, len(row.generated))
        self._post(job, Done(row.text.text, row.finish_reason, len(row.generated)))

    def _fail(self, job: Job, message: str, code: str, retry_after: str | None = None) -> None:
        if self._ended(job):
            self.m.failed(job, code, time.perf_counter())
            self._post(job, Failed(message, code, retry_after))

    def _refuse(self, job: Job, message: str, code: str, retry_after: str) -> None:
        """A queued job turned away before generating anything: a refusal, with Retry-After."""
        if not job.finished:
            self.m.refused[code].inc()
        self._fail(job, message, code, retry_after)
