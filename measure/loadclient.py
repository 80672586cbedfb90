"""The load generator's HTTP client: one request to an OpenAI-style `/v1/completions` endpoint, streamed (Server-Sent
Events) or not, measured (time to first token, the gaps between text chunks, end to end, completion tokens) and its
failure classified by kind; and the probe of `/v1/models` a run starts with.

Tokens are what users get, not what the wire shows: a server may put several tokens in one SSE chunk (gptzoo's
coalesces the deltas that pile up while a client is behind), so streamed requests ask for
`stream_options.include_usage` and take `completion_tokens` from the final usage chunk. A server that ignores it
gets its text chunks counted instead, and the report says so (`tokens_from`), never silently. ITL stays a gap between
chunks: with coalescing, one gap may cover several tokens.

The client must stay light: pinned to one core next to a one-core server, a heavy client measures its own event
loop (httpx's layered stream iteration kept the core ~90% busy at 32 streams and made the client's TTFT mostly
its own queueing). So aiohttp, its C HTTP parser, one `readline` per SSE line, and json.loads on `data:` lines only.
It is a plain HTTP client: nothing here imports gptzoo.server, so it can load any OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gptzoo.measure.loadconfig import LoadConfig, LoadTestError

if TYPE_CHECKING:  # imported where used: the CLI reads the load test's limits without the `serve` extra
    import aiohttp
    import yarl

MAX_RETRY_AFTER_S = 1.0  # a client told to back off (429) waits Retry-After, at most this long
# After data: [DONE], how long a stream may take to end its HTTP body (the chunked terminator usually follows at
# once). Waiting keeps the connection alive for the next request; a server that leaves the body open is not an error,
# its connection is closed instead.
DRAIN_S = 1.0
# A kept-alive connection the server closed while it sat in the pool (llama.cpp's llama-server closes them) fails the
# next request sent on it before any answer: "Can not write request body" (ClientOSError) or a disconnect. That
# request never reached the server's handler, so it is sent once more on a fresh connection, counted once, timed from
# its first try (`reconnected` says so). Only a reused connection, only before a response head: a server that drops
# fresh connections, or requests it answered, still fails them. Each stale connection leaves the pool as it fails.
MAX_STALE = 8

# Failure kinds, in report order. stream_error: the server reported an error event inside a started stream.
ERROR_KINDS = ("http_429", "http_503", "http_4xx", "http_5xx", "timeout", "connection", "protocol", "stream_error")


@dataclass
class RequestResult:
    ok: bool
    status: int | None = None  # HTTP status; None when no response came
    error: str | None = None  # one of ERROR_KINDS when not ok
    message: str | None = None  # the server's error message, or the exception's
    ttft_s: float | None = None  # request sent -> first non-empty text (streaming only)
    itl_s: list[float] = field(default_factory=list)  # gaps between successive non-empty text chunks
    e2e_s: float = 0.0
    tokens: int = 0  # completion tokens: the usage when the server gives it, else the non-empty chunks
    tokens_from: str | None = None  # "usage", "chunks" (a stream without usage) or "none" (plain JSON without it)
    chunks: int = 0  # non-empty text chunks received (streaming): what older load generators counted as tokens
    model: str | None = None  # the variant that served: the answer's `model` (gptzoo: x-gptzoo-model)
    route: str | None = None  # gptzoo's x-gptzoo-route header: why that variant served
    reconnected: bool = False  # sent again on a fresh connection: the server had closed the kept-alive one

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first, as the client saw it (streams with 2+ tokens)."""
        if self.ttft_s is None or self.tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.tokens - 1)


class _Failed(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None):
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status


def classify_status(status: int) -> str:
    if status == 429:
        return "http_429"
    if status == 503:
        return "http_503"
    if 400 <= status < 500:
        return "http_4xx"
    if 500 <= status < 600:
        return "http_5xx"
    return "protocol"


def _error_message(body: bytes) -> str:
    """OpenAI's {"error": {"message"}} or Litestar's {"detail"}; else the start of the body."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace").strip()
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if obj.get("detail"):
            return str(obj["detail"])
    return str(obj)[:200]


def _retry_after(response: aiohttp.ClientResponse) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", 0)))
    except ValueError:
        return 0.0


def _payload(cfg: LoadConfig, index: int) -> dict:
    body: dict = {"model": cfg.model, "prompt": cfg.prompt, "max_tokens": cfg.max_tokens, "stream": cfg.stream}
    if cfg.temperature is not None:
        body["temperature"] = cfg.temperature
    if cfg.seed is not None:
        body["seed"] = cfg.seed + index
    if cfg.stream:
        body["stream_options"] = {"include_usage": True}
    for name in ("max_tpot_ms", "max_ttft_ms", "fallback"):
        if (v := getattr(cfg, name)) is not None:
            body[name] = v
    return body


async def one_request(client: aiohttp.ClientSession, cfg: LoadConfig, index: int,
                      drain_s: float = DRAIN_S) -> tuple[RequestResult, float]:
    """Sends request `index`; returns its result and how long the client should wait before its next request
    (Retry-After on a 429, capped). `drain_s`: how long a stream's body may stay open after [DONE] (`_drain`)."""
    import aiohttp

    t0 = time.perf_counter()
    result = RequestResult(ok=False)
    backoff = 0.0
    try:
        async with asyncio.timeout(cfg.timeout) as deadline:
            async with await _post(client, _endpoint(cfg.url, "v1/completions"), _payload(cfg, index),
                                   result) as response:
                result.status = response.status
                result.model = response.headers.get("x-gptzoo-model")
                result.route = response.headers.get("x-gptzoo-route")
                if response.status != 200:
                    body = await response.read()
                    if response.status == 429:
                        backoff = min(_retry_after(response), MAX_RETRY_AFTER_S)
                    raise _Failed(classify_status(response.status), _error_message(body), response.status)
                if cfg.stream:
                    await _read_stream(response, t0, result)
                    deadline.reschedule(None)  # the answer is complete: what follows [DONE] is only drained
                    await _drain(response.content, drain_s)
                else:
                    _read_json(await response.read(), result)
    except _Failed as f:
        result.error, result.message = f.kind, f.message
    except TimeoutError:  # asyncio's (the same class since 3.11) and aiohttp's own (ServerTimeoutError)
        result.error, result.message = "timeout", f"no complete answer within {cfg.timeout:g} s"
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as e:
        # closed before or inside an answer, a body that does not decode, a response head that does not parse
        result.error, result.message = "protocol", _exc_message(e)
    except aiohttp.ClientError as e:  # ClientConnectorError (refused, DNS), ClientOSError (reset), ...
        result.error, result.message = "connection", _exc_message(e)
    else:
        result.ok = True
    result.e2e_s = time.perf_counter() - t0
    return result, backoff


class _Attempt:
    """One try's trace context: whether the pool handed it a kept-alive connection (`reuse_trace`)."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


async def _on_reuse(session, ctx, params) -> None:
    if isinstance(ctx.trace_request_ctx, _Attempt):
        ctx.trace_request_ctx.reused = True


def reuse_trace() -> aiohttp.TraceConfig:
    """The session's trace hook that tells `_post` a request went out on a reused connection."""
    import aiohttp

    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(_on_reuse)
    return trace


async def _post(client: aiohttp.ClientSession, url: yarl.URL, body: dict,
                result: RequestResult) -> aiohttp.ClientResponse:
    """POSTs `body`; again when the kept-alive connection it went out on turned out closed (MAX_STALE)."""
    import aiohttp

    for tries in range(1, MAX_STALE + 1):
        attempt = _Attempt()
        try:
            return await client.post(url, json=body, allow_redirects=False, trace_request_ctx=attempt)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as e:
            if not attempt.reused or isinstance(e, aiohttp.ClientConnectorError) or tries == MAX_STALE:
                raise
            result.reconnected = True
    raise AssertionError("unreachable")


def _exc_message(e: BaseException) -> str:
    return str(e) or type(e).__name__


@functools.lru_cache(maxsize=64)
def _endpoint(base: str, path: str) -> yarl.URL:
    """base (check_url's: no trailing slash, any path prefix kept) + "/" + path, parsed once."""
    import yarl

    return yarl.URL(f"{base}/{path}")


async def _read_stream(response: aiohttp.ClientResponse, t0: float, result: RequestResult) -> None:
    from aiohttp.http_exceptions import HttpProcessingError

    ctype = response.headers.get("content-type", "")
    if not ctype.startswith("text/event-stream"):
        raise _Failed("protocol", f"expected text/event-stream, got {ctype or 'no content type'}", 200)
    content = response.content
    readline, loads, clock = content.readline, json.loads, time.perf_counter
    last = None
    chunks, usage_tokens, done = 0, None, False
    while True:
        try:
            line = await readline()  # bytes up to and including b"\n"; b"" at the end of the body
        except (ValueError, HttpProcessingError) as e:  # a line over the reader's limit: LineTooLong (older
            raise _Failed("protocol", f"event line too long: {e}", 200) from None  # aiohttp: ValueError)
        if not line:
            break
        if not line.startswith(b"data:"):
            continue  # blank separators, event:, id:, comments
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        try:
            obj = loads(data)
        except ValueError:  # UnicodeDecodeError included
            raise _Failed("protocol", f"invalid JSON in event: {_text(data[:80])}", 200) from None
        if not isinstance(obj, dict):
            raise _Failed("protocol", f"unexpected event: {_text(data[:80])}", 200)
        if "error" in obj:
            raise _Failed("stream_error", _error_message(data), 200)
        if result.model is None and isinstance(obj.get("model"), str):
            result.model = obj["model"]
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            usage_tokens = usage["completion_tokens"]
        for choice in obj.get("choices") or []:
            if choice.get("text"):
                now = clock()
                if last is None:
                    result.ttft_s = now - t0
                else:
                    result.itl_s.append(now - last)
                last = now
                chunks += 1
    if not done:
        raise _Failed("protocol", "the stream ended without data: [DONE]", 200)
    result.chunks = chunks
    if usage_tokens is not None:
        result.tokens, result.tokens_from = usage_tokens, "usage"
    else:  # a server that ignores stream_options: a chunk may hold several tokens (or none), so flagged
        result.tokens, result.tokens_from = chunks, "chunks"


async def _drain(content: aiohttp.StreamReader, drain_s: float) -> None:
    """Reads what follows [DONE] up to the end of the body, so the connection goes back to the pool: leaving before
    the body's end (the chunked terminator often arrives in the next read) would close it, and the next request
    would open a new one. Bounded by `drain_s`, not by the request's timeout: what arrives there is not looked at,
    and failing to read it is no failure of the request (its connection is closed instead)."""
    import aiohttp

    if content.is_eof():
        return
    try:
        async with asyncio.timeout(drain_s):
            while await content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


def _text(data: bytes) -> str:
    return data.decode(errors="replace")


def _read_json(body: bytes, result: RequestResult) -> None:
    try:
        obj = json.loads(body)
        if not isinstance(obj["choices"], list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise _Failed("protocol", f"not a completion: {body[:80]!r}", 200) from None
    if result.model is None and isinstance(obj.get("model"), str):
        result.model = obj["model"]
    usage = obj.get("usage") or {}
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        result.tokens, result.tokens_from = usage["completion_tokens"], "usage"
    else:
        result.tokens_from = "none"  # no count to fall back on: 0 tokens, and the report says why


async def probe(client: aiohttp.ClientSession, cfg: LoadConfig) -> tuple[list[str] | None, dict[str, float]]:
    """GET /v1/models: raises LoadTestError when the server cannot be reached; returns the ids and aliases it
    lists (None when it answered something else, e.g. 401) and the validation losses it lists by id."""
    import aiohttp

    try:
        async with asyncio.timeout(min(cfg.timeout, 10.0)):
            async with client.get(_endpoint(cfg.url, "v1/models"), allow_redirects=False) as r:
                status, body = r.status, await r.read()
    except TimeoutError:
        raise LoadTestError(f"cannot reach {cfg.url}: no answer to GET /v1/models within "
                            f"{min(cfg.timeout, 10.0):g} s") from None
    except aiohttp.ClientError as e:
        raise LoadTestError(f"cannot reach {cfg.url}: {_exc_message(e)}") from None
    if status != 200:
        return None, {}
    try:
        data = json.loads(body)["data"]
        names = [m["id"] for m in data]
        names += [a for m in data for a in m.get("aliases") or []]
    except (ValueError, KeyError, TypeError):
        return None, {}
    losses = {m["id"]: m["val_loss"] for m in data if isinstance(m, dict) and isinstance(m.get("val_loss"), float)}
    return names, losses
