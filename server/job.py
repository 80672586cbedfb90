"""One completion request on its way through a worker, and the events it gets back.

The worker's thread hands a step's events to the job's event loop in one cross-thread call (`deliver`); the HTTP side
reads them with `Job.events()`, an async iterator that ends after the job's last event (Done or Failed)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator

from gptzoo.server import ttft_trace
from gptzoo.server.events import Event, TextDelta
from gptzoo.server.latency import Budget
from gptzoo.zoo.sampling import SamplingParams


class Job:
    """One completion request on its way through a worker."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, stream: bool, budget: Budget | None = None,
                 family: str = "", speculative: bool = True):
        self.prompt_ids, self.params, self.stream = prompt_ids, params, stream
        self.speculative = speculative  # False: the request opted out of drafting (its `speculative` field)
        self.budget, self.family = budget or Budget(), family  # family: the metric label of its budget's verdict
        self.loop = asyncio.get_running_loop()
        self._inbox: deque[Event] = deque()  # delivered and not read yet; only the job's loop touches it
        self._arrived = asyncio.Event()
        self._read_last = False  # its Done or Failed was read: its events are over
        self.arrival = time.perf_counter()
        self.cancelled = False  # set by the HTTP side (client gone); the worker drops the row at its next step
        self.finished = False
        self.deadline = math.inf  # perf_counter time to be admitted by; set on submit to arrival + request_timeout
        self.seen = 0  # tokens already accounted for in the latency metrics
        self.streaming = False  # its first event went out (later text may be held for a stream interval)
        self.first_token_at = self.last_token_at = 0.0
        self.found_full = False  # every slot was taken or promised when it arrived: it waits for one to free
        self.admitted_at = 0.0  # perf_counter time it took a batch slot (0: not yet)
        self.requested = ""  # the model name it was routed by (the GenAI series' request model; "": its variant's)
        self.trace: ttft_trace.Trace | None = None  # its first token's timings, when GPTZOO_TTFT_TRACE is set

    def cancel(self) -> None:
        if not self.finished:
            self.cancelled = True

    def put(self, event: Event) -> None:
        """On the job's event loop: one event from the worker."""
        self._inbox.append(event)
        self._arrived.set()

    def events(self, join: bool = True) -> AsyncIterator[Event]:
        """The job's events in order, ending after Done or Failed. Text that piled up while the reader was away
        (a client slower than the decode) comes as one TextDelta, not one per step (`join=False`: one event as the
        worker sent it, for the first token, so what a client times as its first token is one token). Events not
        read stay with the job, so a second iterator goes on where the first stopped. (A class, not an async
        generator: one left unfinished would make its event loop schedule a task to close it.)"""
        return _Events(self, join)

    async def _next(self, join: bool) -> Event:
        inbox = self._inbox
        if self._read_last:
            raise StopAsyncIteration
        while not inbox:
            self._arrived.clear()
            await self._arrived.wait()
        event = inbox.popleft()
        if join and isinstance(event, TextDelta) and inbox and isinstance(inbox[0], TextDelta):
            parts = [event.text]
            while inbox and isinstance(inbox[0], TextDelta):
                parts.append(inbox.popleft().text)
            event = TextDelta("".join(parts))
        self._read_last = not isinstance(event, TextDelta)
        return event


class _Events:
    __slots__ = ("job", "join")

    def __init__(self, job: Job, join: bool):
        self.job, self.join = job, join

    def __aiter__(self) -> _Events:
        return self

    def __anext__(self):
        return self.job._next(self.join)


def deliver(events: list[tuple[Job, Event]]) -> None:
    """On a job's event loop: a step's events, in the order the worker produced them."""
    if ttft_trace.ON:
        now = time.perf_counter()
        for job, _ in events:
            if job.trace is not None and not job.trace.delivered:
                job.trace.delivered = now
    for job, event in events:
        job.put(event)
