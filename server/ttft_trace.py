"""Opt-in timing of each streamed request's first token, part by part (issue 27: where the tail of time to first
token comes from under load). Set `GPTZOO_TTFT_TRACE=FILE` before `gptzoo serve`: every streamed request appends one
JSON line to FILE after its first SSE frame was sent (in batches; the rest as the server exits). Off (the default),
jobs carry no trace and the hooks are one `is None` test per admitted job, first token and hand-off;
`benchmarks/ttft_breakdown.py` reads the file.

The parts, in the order a first token meets them (perf_counter seconds; each record gives them in ms from `received`,
when the app's middleware saw the request, i.e. uvicorn read its head):
- `handler`: the route's handler began (after Litestar read and checked the body);
- `queued`: the job was queued for the worker (routing, tokenizing); `steps_waited`: steps the worker ran meanwhile;
- `admitted`: the worker took it at the start of a step (queue wait: the running step, or a free slot);
- `sampled`: its first token was sampled, in that step (`prefill_ms`/`decode_ms`: the step's calls, `rows`: rows in
  it, `new`: rows it admitted), after the step's prompts and before the others' decode call;
- `handed`: the step's events went to the event loop (call_soon_threadsafe);
- `delivered`: the event loop ran the hand-off; `sent`: the first frame went out to the socket.
Garbage collections (gc.callbacks, any thread) that overlap a request are summed into `gc_ms`.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import threading
import time
from collections import deque

PATH = os.environ.get("GPTZOO_TTFT_TRACE") or None
ON = PATH is not None
_FLUSH_EVERY = 64
# The first frame may leave while the step that made it still runs (its decode call): the newest records wait for
# their step's timings, so a flush under way leaves them for the next.
_UNSETTLED = 32

_lock = threading.Lock()
_done: list[Trace] = []  # first frames sent, not written yet
_gcs: deque[tuple[float, float, int, str]] = deque(maxlen=4096)  # (start, end, generation, thread name)
_gc_start: dict[int, float] = {}


class Trace:
    __slots__ = ("received", "handler", "queued", "steps_at_queue", "steps_waited", "admitted", "sampled", "prefill_s",
                 "decode_s", "rows", "new", "handed", "delivered", "sent", "gc_s", "gc_worker_s")

    def __init__(self, received: float, handler: float) -> None:
        self.received, self.handler = received, handler
        self.queued = self.admitted = self.sampled = self.handed = self.delivered = self.sent = 0.0
        self.prefill_s = self.decode_s = self.gc_s = self.gc_worker_s = 0.0
        self.steps_at_queue = self.steps_waited = self.rows = self.new = 0


RECEIVED = "gptzoo_trace_received"  # the scope's state key BodyGuard stamps


def received(scope: dict) -> None:
    """In the middleware: the request reached the app."""
    scope.setdefault("state", {})[RECEIVED] = time.perf_counter()


def start(scope: dict) -> Trace | None:
    """A trace for a request whose handler begins now; None when tracing is off."""
    if not ON:
        return None
    now = time.perf_counter()
    return Trace(scope.get("state", {}).get(RECEIVED, now), now)


def sent(trace: Trace) -> None:
    """The first frame is out: the garbage collections that overlapped the request are summed now."""
    trace.sent = time.perf_counter()
    for a, b, _gen, thread in list(_gcs):
        overlap = min(b, trace.sent) - max(a, trace.received)
        if overlap > 0:
            trace.gc_s += overlap
            if not thread.startswith("MainThread"):
                trace.gc_worker_s += overlap
    with _lock:
        _done.append(trace)
        if len(_done) >= _FLUSH_EVERY + _UNSETTLED:
            _flush(_UNSETTLED)


def _record(trace: Trace) -> str:
    t0 = trace.received

    def ms(t: float) -> float | None:
        return round((t - t0) * 1e3, 3) if t else None

    return json.dumps({
        "handler": ms(trace.handler), "queued": ms(trace.queued), "admitted": ms(trace.admitted),
        "sampled": ms(trace.sampled), "handed": ms(trace.handed), "delivered": ms(trace.delivered),
        "sent": ms(trace.sent), "steps_waited": trace.steps_waited, "prefill_ms": round(trace.prefill_s * 1e3, 3),
        "decode_ms": round(trace.decode_s * 1e3, 3), "rows": trace.rows, "new": trace.new,
        "gc_ms": round(trace.gc_s * 1e3, 3), "gc_worker_ms": round(trace.gc_worker_s * 1e3, 3)})


def _flush(keep: int = 0) -> None:
    """Under _lock: appends the records but the newest `keep` (a trace is a diagnostic run, not served traffic:
    plain appends)."""
    out, _done[:] = _done[: len(_done) - keep], _done[len(_done) - keep :]
    if out and PATH:
        with open(PATH, "a") as f:
            f.write("".join(_record(t) + "\n" for t in out))


def flush() -> None:
    with _lock:
        _flush()


def _on_gc(phase: str, info: dict) -> None:
    now, me = time.perf_counter(), threading.get_ident()
    if phase == "start":
        _gc_start[me] = now
    elif (began := _gc_start.pop(me, None)) is not None:
        _gcs.append((began, now, info.get("generation", -1), threading.current_thread().name))


if ON:
    gc.callbacks.append(_on_gc)
    atexit.register(flush)
