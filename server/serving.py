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

from gptzoo.server import metrics, outcomes, routing
from gptzoo.server.errors import TYPES, ApiError, ErrorBody, ErrorResponse, bad_request, clip
from gptzoo.server.events import Done, Failed, TextDelta
from gptzoo.server.latency import Budget
from gptzoo.server.router import ModelRouter
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
from gptzoo.server.worker import Job, ModelWorker
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
    def __init__(self, router: ModelRouter, settings: Settings):
        self.router, self.settings = router, settings

    async def prepare(self, req: CompletionRequest, scope: dict) -> Prepared:
        """Every check a request can fail, then the job queued; raises ApiError (never after streaming starts).
        The request's `scope` gets the model's metric labels, so its outcome counts under the model.

        `model` names a variant (id or depth alias), or `auto` / a family id: then the router picks the variant by
        the request's budget (gptzoo.server.routing). A full queue hands the request to a shallower variant of the
        same family when the request or the server allows it."""
        pool = routing.candidates(req.model, list(self.router.workers.values()), self.router.auto_family)
        if pool is None:
            worker = self.router.get(req.model)
            scope.setdefault("state", {})["gptzoo_model_labels"] = worker.labels
            worker = self.router.ready(req.model)
        else:
            worker = pool[0]
        params = self._params(req)
        budget = Budget(tpot=None if req.max_tpot_ms is None else req.max_tpot_ms / 1e3,
                        ttft=None if req.max_ttft_ms is None else req.max_ttft_ms / 1e3)
        prompt = one_prompt(req.prompt)
        ids = await self._encode(worker, prompt)
        if len(ids) > self.settings.max_prompt_tokens:
            raise bad_request(f"the prompt is {len(ids)} tokens long; this server accepts at most "
                              f"{self.settings.max_prompt_tokens} (and {worker.id} reads only the last "
                              f"{worker.block_size})", "prompt", "prompt_too_long")
        if pool is None:
            route, predicted = routing.NAMED, routing.predict(worker, len(ids), time.perf_counter())
        else:
            predicted, route = routing.choose(pool, budget, len(ids), self.router.ready_workers())
            worker = predicted.worker
        fallback = (req.fallback or self.settings.fallback) == "shallower"
        tried = [worker]
        while True:
            scope.setdefault("state", {})["gptzoo_model_labels"] = worker.labels
            job = Job(ids, params, stream=bool(req.stream), budget=budget, family=routing.family(worker) or "",
                      speculative=req.speculative is not False)
            try:
                worker.submit(job)
                break
            except ApiError as e:
                nxt = next((w for w in routing.shallower(tried[0], self.router.ready_workers()) if w not in tried),
                           None) if fallback and e.code == "overloaded" else None
                if nxt is None:
                    raise
                if nxt.card.tokenizer != worker.card.tokenizer:  # a family shares its dataset, not always its tokenizer
                    ids = await self._encode(nxt, prompt)
                worker, route = nxt, routing.FALLBACK
                tried.append(worker)
                predicted = routing.predict(worker, len(ids), time.perf_counter())
        if not math.isnan(predicted.tpot):  # nan: the worker has no figures yet
            worker.m.predicted_tpot.observe(predicted.tpot)
        metrics.ROUTES.labels(**worker.labels, family=job.family, reason=route).inc()
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return Prepared(f"cmpl-{uuid.uuid4().hex}", int(time.time()), worker, job, include_usage, scope, route)

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
        """The job's first event (for a plain request, its result); a Failed event is raised as ApiError.

        Litestar does not cancel a handler whose client hung up, so this also listens for the disconnect: the job
        is then cancelled (its row leaves the batch at the next step), counted as cancelled, and 499 raised to
        nobody. (A stream that has started is cancelled by Litestar itself, which ends `stream` below.)"""
        get = asyncio.ensure_future(p.job.events.get())
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
            raise ApiError(event.status, event.message, code=event.code, headers=event.headers)
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
        first = True
        try:
            while True:
                if isinstance(event, TextDelta):
                    # a client slower than the decode gets what piled up in one chunk, not one write per token; the
                    # first token always goes alone, so what a client measures as its first token is one token
                    text, event = event.text, None
                    while not first and event is None and not p.job.events.empty():
                        nxt = p.job.events.get_nowait()
                        if isinstance(nxt, TextDelta):
                            text += nxt.text
                        else:
                            event = nxt
                    yield frames.text(text)
                    first = False
                    if event is not None:
                        continue
                elif isinstance(event, Done):
                    outcomes.record(p.scope, event.finish_reason)
                    yield frames.chunk([CompletionChoice(text="", finish_reason=event.finish_reason)])
                    if p.include_usage:  # OpenAI's stream_options: one more chunk, no choices, the usage
                        yield frames.chunk([], usage(p, event.completion_tokens))
                    break
                else:
                    outcomes.record(p.scope, event.code)
                    error = ErrorBody(event.message, TYPES.get(event.status, "server_error"), None, event.code)
                    yield sse_frame(msgspec.json.encode(ErrorResponse(error)))
                    break
                event = await p.job.events.get()
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
