"""Completions: turn a request into a Job for the model's worker, then into OpenAI's response or SSE chunks.

The handler waits for the job's first event before answering, so errors before the first token (queue timeout,
shutdown) keep their HTTP status even when streaming; later errors in a stream become an error event."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
from litestar.types import Receive

from gptzoo.server import metrics, outcomes, routing, ttft_trace
from gptzoo.server.errors import TYPES, ApiError, ErrorBody, ErrorResponse, bad_request, clip, outcome_error, status_of
from gptzoo.server.events import Done, Failed, TextDelta
from gptzoo.server.job import Job
from gptzoo.server.latency import Budget
from gptzoo.server.registry import Ask, Registry
from gptzoo.server.schemas import (
    NEUTRAL,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    Usage,
    neutral_values,
)
from gptzoo.server.settings import Settings
from gptzoo.server.worker import ModelWorker
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.tokenizers import UnknownCharacters

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
THREAD_TOKENIZE_CHARS = 20_000  # longer prompts are tokenized off the event loop


@dataclass
class Prepared:
    """A request that passed every check and is queued."""

    id: str
    created: int
    worker: ModelWorker
    job: Job
    include_usage: bool
    scope: dict  # the request's ASGI scope: its outcome is recorded there, once (gptzoo.server.outcomes)
    route: str = routing.NAMED  # why `worker` serves it (gptzoo.server.routing's reasons)

    @property
    def headers(self) -> dict[str, str]:
        """Which variant served and why, for clients that named `auto` or a family (sent on every answer)."""
        return {"x-gptzoo-model": self.worker.id, "x-gptzoo-route": self.route}


class CompletionService:
    def __init__(self, router: Registry, settings: Settings):
        self.router, self.settings = router, settings

    async def prepare(self, req: CompletionRequest, scope: dict) -> Prepared:
        """Every check a request can fail, then the job queued; raises ApiError, Refused or UnknownModel (never
        after streaming starts). The request's `scope` gets the model's metric labels, so its outcome counts under
        the model.

        `model` names a variant (id or depth alias), or `auto` / a family id: the registry's `route` picks the
        worker (by the request's budget, and a shallower one of the family for a full queue when the request or the
        server allows it); the checks here run once the name is known to serve."""
        trace = ttft_trace.start(scope) if req.stream else None
        params: SamplingParams | None = None
        prompt = ""
        budget = Budget(tpot=None if req.max_tpot_ms is None else req.max_tpot_ms / 1e3,
                        ttft=None if req.max_ttft_ms is None else req.max_ttft_ms / 1e3)

        async def tokens(worker: ModelWorker) -> list[int]:
            nonlocal params, prompt
            if params is None:  # the first worker: a named model that does not serve was refused before these
                params, prompt = self._params(req), one_prompt(req.prompt)
            return await self._tokens(worker, prompt)

        def note(worker: ModelWorker) -> None:
            scope.setdefault("state", {})["gptzoo_model_labels"] = worker.labels

        def new_job(worker: ModelWorker, ids: list[int]) -> Job:
            job = Job(ids, params, stream=bool(req.stream), budget=budget, family=routing.family(worker) or "",
                      speculative=req.speculative is not False)
            if trace is not None:
                job.trace, trace.queued, trace.steps_at_queue = trace, job.arrival, worker.steps
            return job

        ask = Ask(req.model, budget, (req.fallback or self.settings.fallback) == "shallower")
        route = await self.router.route(ask, tokens, new_job, note)
        worker, job, predicted = route.worker, route.job, route.predicted
        if not math.isnan(predicted.tpot):  # nan: the worker has no figures yet
            worker.m.predicted_tpot.observe(predicted.tpot)
        metrics.ROUTES.labels(**worker.labels, family=job.family, reason=route.reason).inc()
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        p = Prepared(f"cmpl-{uuid.uuid4().hex}", int(time.time()), worker, job, include_usage, scope, route.reason)
        scope.setdefault("state", {})["gptzoo_prepared"] = p  # its trace reads it (gptzoo.server.tracing)
        return p

    def _params(self, req: CompletionRequest) -> SamplingParams:
        if req.n not in (None, 1):
            raise bad_request(f"n={clip(str(req.n))} is not supported: this server returns one choice per request "
                              "(n=1)", "n", "unsupported_value")
        for field, neutral in NEUTRAL.items():
            if getattr(req, field) not in neutral:
                raise bad_request(f"`{field}` is not supported by this server: leave it out or send "
                                  f"{neutral_values(field)}", field, "unsupported_value")
        max_tokens = DEFAULT_MAX_TOKENS if req.max_tokens is None else req.max_tokens
        if max_tokens > self.settings.max_tokens:
            raise bad_request(f"max_tokens={clip(str(max_tokens))} is above this server's limit of "
                              f"{self.settings.max_tokens}", "max_tokens", "max_tokens_too_large")
        try:
            return SamplingParams(
                max_tokens=max_tokens,
                temperature=1.0 if req.temperature is None else req.temperature,
                top_k=req.top_k,
                top_p=req.top_p,
                seed=req.seed,
                stop=[req.stop] if isinstance(req.stop, str) else list(req.stop or []),
            )
        except ValueError as e:
            raise bad_request(str(e)) from None

    async def _tokens(self, worker: ModelWorker, prompt: str) -> list[int]:
        """The prompt's tokens for `worker`; a prompt beyond this server's limit is refused."""
        ids = await self._encode(worker, prompt)
        if len(ids) > self.settings.max_prompt_tokens:
            raise bad_request(f"the prompt is {len(ids)} tokens long; this server accepts at most "
                              f"{self.settings.max_prompt_tokens} (and {worker.id} reads only the last "
                              f"{worker.block_size})", "prompt", "prompt_too_long")
        return ids

    async def _encode(self, worker: ModelWorker, prompt: str) -> list[int]:
        try:
            if len(prompt) > THREAD_TOKENIZE_CHARS:
                return await asyncio.to_thread(worker.encode, prompt)
            return worker.encode(prompt)
        except UnknownCharacters as e:
            shown = ", ".join(repr(c) for c in e.chars[:20]) + (" …" if len(e.chars) > 20 else "")
            raise bad_request(f"the prompt has {len(e.chars)} character(s) outside {worker.id}'s vocabulary: {shown}",
                              "prompt", "unknown_characters") from None

    async def first_event(self, p: Prepared, receive: Receive) -> TextDelta | Done:
        """The job's first event (for a plain request, its result); a Failed event is raised as its HTTP error.

        Litestar does not cancel a handler whose client hung up, so this also listens for the disconnect: the job
        is then cancelled (its row leaves the batch at the next step), counted as cancelled, and 499 raised to
        nobody. (A stream that has started is cancelled by Litestar itself, which ends `stream` below.)"""
        get = asyncio.ensure_future(anext(p.job.events(join=False)))  # the first token alone
        gone = asyncio.ensure_future(client_gone(receive))
        try:
            await asyncio.wait((get, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not get.done():  # we were cancelled, or the client left first
                get.cancel()
                p.job.cancel()
        if not get.done():
            outcomes.record(p.scope, "cancelled")
            raise ApiError(499, "the client closed the connection", code="client_closed")
        event = get.result()
        if isinstance(event, Failed):
            raise outcome_error(event.code, event.message, event.retry_after)
        return event

    async def release(self, p: Prepared) -> None:
        """After a stream's response, however it ended: a stream Litestar cancelled (client gone) may never have run
        its own `finally`, so the job is cancelled and counted here too (both no-ops if it ended normally)."""
        p.job.cancel()
        outcomes.record(p.scope, "cancelled")

    def response(self, p: Prepared, event: Done) -> CompletionResponse:
        outcomes.record(p.scope, event.finish_reason)
        return CompletionResponse(id=p.id, created=p.created, model=p.worker.id,
                                  choices=[CompletionChoice(text=event.text, finish_reason=event.finish_reason)],
                                  usage=usage(p, event.completion_tokens))

    async def stream(self, p: Prepared, event: TextDelta | Done) -> AsyncIterator[bytes]:
        """OpenAI's chunk format as complete Server-Sent Events frames (`data: …` and a blank line, bytes ready for
        the socket) from the first event on, ending with `[DONE]`; an error after the start becomes an error event."""
        frames = ChunkFrames(p)
        later = p.job.events()  # a client slower than the decode gets what piled up as one TextDelta
        try:
            if p.job.trace is not None and isinstance(event, TextDelta):
                yield frames.text(event.text)
                ttft_trace.sent(p.job.trace)
                event = await anext(later)
            while True:
                if isinstance(event, TextDelta):
                    yield frames.text(event.text)
                elif isinstance(event, Done):
                    outcomes.record(p.scope, event.finish_reason)
                    yield frames.chunk([CompletionChoice(text="", finish_reason=event.finish_reason)])
                    if p.include_usage:  # OpenAI's stream_options: one more chunk, no choices, the usage
                        yield frames.chunk([], usage(p, event.completion_tokens))
                    break
                else:
                    outcomes.record(p.scope, event.code)
                    error = ErrorBody(event.message, TYPES.get(status_of(event.code), "server_error"), None, event.code)
                    yield sse_frame(msgspec.json.encode(ErrorResponse(error)))
                    break
                event = await anext(later)
            yield SSE_DONE
        finally:  # also when Litestar cancels the stream because the client left
            p.job.cancel()
            outcomes.record(p.scope, "cancelled")  # a no-op when the end was recorded above


SSE_DONE = b"data: [DONE]\r\n\r\n"


def sse_frame(data: bytes) -> bytes:
    """One Server-Sent Event of one `data` line (JSON never holds a raw line break), ended with CRLFs as Litestar's
    ServerSentEvent ended them, so the bytes on the wire did not change."""
    return b"data: " + data + b"\r\n\r\n"


class ChunkFrames:
    """A stream's SSE frames. A text chunk differs from the stream's others only in its text, so the bytes around
    the text are encoded once, when the stream starts, and a frame costs one JSON encode of its text: byte for
    byte what msgspec makes of the whole CompletionChunk."""

    def __init__(self, p: Prepared):
        self.p = p
        whole = self.chunk([CompletionChoice(text="")])
        # the first `"text":""` is the choice's: the strings before it (id, model) are JSON, so quotes are escaped
        head, _, tail = whole.partition(b'"text":""')
        self.head, self.tail = head + b'"text":', tail

    def text(self, text: str) -> bytes:
        return self.head + msgspec.json.encode(text) + self.tail

    def chunk(self, choices: list[CompletionChoice], use: Usage | None = None) -> bytes:
        p = self.p
        return sse_frame(msgspec.json.encode(CompletionChunk(id=p.id, object="text_completion", created=p.created,
                                                             model=p.worker.id, choices=choices, usage=use)))


def one_prompt(prompt: str | list[str | int]) -> str:
    """The text of OpenAI's `prompt`, which may be a list: gptzoo serves one text per request, and some clients
    (LangChain's OpenAI wrapper, for one) send that as a list of one."""
    if isinstance(prompt, str):
        return prompt
    if any(isinstance(p, int) for p in prompt):
        raise bad_request("a prompt of token ids is not supported: send the text (each model tokenizes it itself)",
                          "prompt", "unsupported_value")
    if len(prompt) > 1:
        raise bad_request(f"this server takes one prompt per request, not a list of {len(prompt)}: send one request "
                          "per prompt", "prompt", "unsupported_value")
    return prompt[0]


async def client_gone(receive: Receive) -> None:
    """Returns once the client disconnects (after the request body, ASGI's receive blocks until then)."""
    while (await receive())["type"] != "http.disconnect":
        continue


def usage(p: Prepared, completion_tokens: int) -> Usage:
    n = len(p.job.prompt_ids)
    return Usage(prompt_tokens=n, completion_tokens=completion_tokens, total_tokens=n + completion_tokens)
