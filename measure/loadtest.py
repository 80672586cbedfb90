"""A load generator for an OpenAI-style `/v1/completions` endpoint: N concurrent clients (asyncio + aiohttp), each
sending one request after the other, streamed (Server-Sent Events) or not, for a number of requests and/or a
duration. It measures per request the time to first token (TTFT), the inter-token latencies (ITL, the gaps between
text chunks), the end-to-end latency and the completion tokens, and classifies failures by kind.

Tokens are what users get, not what the wire shows: a server may put several tokens in one SSE chunk (gptzoo's
coalesces the deltas that pile up while a client is behind), so streamed requests ask for
`stream_options.include_usage` and take `completion_tokens` from the final usage chunk. A server that ignores it
gets its text chunks counted instead, and the report says so (`tokens_from`), never silently. ITL stays a gap between
chunks: with coalescing, one gap may cover several tokens.

The client must stay light: pinned to one core next to a one-core server, a heavy client measures its own event
loop (httpx's layered stream iteration kept the core ~90% busy at 32 streams and made the client's TTFT mostly
its own queueing). So aiohttp, its C HTTP parser, one `readline` per SSE line, and json.loads on `data:` lines only.

It is a plain HTTP client: nothing here imports the rest of gptzoo.server, so it can load any OpenAI-compatible
server. Every run is bounded: at most MAX_REQUESTS requests, MAX_DURATION_S seconds of issuing, MAX_CONCURRENCY
clients, and each request under its own timeout. Only loopback hosts are accepted unless `allow_remote` is set.

    report = run(LoadConfig(url="http://127.0.0.1:8000", model="4l", concurrency=8, requests=100))
    print(report.to_dict())
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gptzoo.zoo.errors import BadValue

if TYPE_CHECKING:  # imported where used: the CLI reads this module's limits without the `serve` extra
    import aiohttp
    import yarl

MAX_REQUESTS = 100_000
MAX_DURATION_S = 3600.0
MAX_CONCURRENCY = 1024
DEFAULT_REQUESTS = 100  # when neither a request count nor a duration is given
MAX_RETRY_AFTER_S = 1.0  # a client told to back off (429) waits Retry-After, at most this long
# After data: [DONE], how long a stream may take to end its HTTP body (the chunked terminator usually follows at
# once). Waiting keeps the connection alive for the next request; a server that leaves the body open is not an error,
# its connection is closed instead.
DRAIN_S = 1.0

# Failure kinds, in report order. stream_error: the server reported an error event inside a started stream.
ERROR_KINDS = ("http_429", "http_503", "http_4xx", "http_5xx", "timeout", "connection", "protocol", "stream_error")
PERCENTILES = (50, 95, 99)


class LoadTestError(BadValue):
    """A run that cannot start: bad options, or the server is unreachable."""


class RemoteNotAllowed(LoadTestError):
    """The URL's host is not a loopback address and remote targets were not allowed."""


@dataclass(frozen=True)
class LoadConfig:
    url: str = "http://127.0.0.1:8000"
    model: str = ""
    concurrency: int = 8
    requests: int | None = None  # total; None: DEFAULT_REQUESTS, or MAX_REQUESTS when a duration is given
    duration: float | None = None  # seconds after which no new request starts
    max_tokens: int = 64
    prompt: str = "ROMEO:"
    temperature: float | None = None  # None: the server's default
    seed: int | None = None  # request i is sent with seed + i
    stream: bool = True
    timeout: float = 60.0  # per request, whole response included
    api_key: str | None = None
    allow_remote: bool = False
    # gptzoo's depth-routing extensions, sent when set; a request is "within budget" when the client measured its
    # time to first token and mean time per output token within them
    max_tpot_ms: float | None = None
    max_ttft_ms: float | None = None
    fallback: str | None = None  # "none" or "shallower"

    def validated(self) -> LoadConfig:
        """Checks the options and the URL; returns the config with its limits resolved."""
        if not self.model:
            raise LoadTestError("a model is required (an id such as shakespeare-char-4l, or an alias such as 4l)")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise LoadTestError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {self.concurrency}")
        if self.requests is not None and not 1 <= self.requests <= MAX_REQUESTS:
            raise LoadTestError(f"requests must be between 1 and {MAX_REQUESTS}, not {self.requests}")
        if self.duration is not None and not 0 < self.duration <= MAX_DURATION_S:
            raise LoadTestError(f"duration must be over 0 and at most {MAX_DURATION_S:.0f} s, not {self.duration}")
        if not 0 < self.timeout <= MAX_DURATION_S:
            raise LoadTestError(f"timeout must be over 0 and at most {MAX_DURATION_S:.0f} s, not {self.timeout}")
        if self.max_tokens < 1:
            raise LoadTestError(f"max_tokens must be at least 1, not {self.max_tokens}")
        for name in ("max_tpot_ms", "max_ttft_ms"):
            if (v := getattr(self, name)) is not None and not (v > 0 and math.isfinite(v)):
                raise LoadTestError(f"{name} must be a number over 0, not {v}")
        if self.fallback not in (None, "none", "shallower"):
            raise LoadTestError(f"fallback must be none or shallower, not {self.fallback!r}")
        requests = self.requests or (MAX_REQUESTS if self.duration else DEFAULT_REQUESTS)
        return dataclasses.replace(self, url=check_url(self.url, self.allow_remote), requests=requests)


def check_url(url: str, allow_remote: bool = False) -> str:
    """The server's base URL (no trailing slash, no /v1); a non-loopback host raises RemoteNotAllowed unless
    allow_remote."""
    import httpx

    try:
        u = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError) as e:
        raise LoadTestError(f"invalid URL {url!r}: {e}") from None
    if u.scheme not in ("http", "https") or not u.host:
        raise LoadTestError(f"invalid URL {url!r}: expected http://HOST[:PORT]")
    if not allow_remote and not is_loopback(u.host):
        raise RemoteNotAllowed(f"{u.host} is not a loopback address (127.0.0.0/8, ::1, localhost); pass "
                               "--allow-remote to load a remote server")
    base = str(u.copy_with(query=None, fragment=None)).rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def is_loopback(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


# -- one request ------------------------------------------------------------------------------------------------
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


async def one_request(client: aiohttp.ClientSession, cfg: LoadConfig, index: int) -> tuple[RequestResult, float]:
    """Sends request `index`; returns its result and how long the client should wait before its next request
    (Retry-After on a 429, capped)."""
    import aiohttp

    t0 = time.perf_counter()
    result = RequestResult(ok=False)
    backoff = 0.0
    try:
        async with asyncio.timeout(cfg.timeout) as deadline:
            async with client.post(_endpoint(cfg.url, "v1/completions"), json=_payload(cfg, index),
                                   allow_redirects=False) as response:
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
                    await _drain(response.content)
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


async def _drain(content: aiohttp.StreamReader) -> None:
    """Reads what follows [DONE] up to the end of the body, so the connection goes back to the pool: leaving before
    the body's end (the chunked terminator often arrives in the next read) would close it, and the next request
    would open a new one. Bounded by DRAIN_S, not by the request's timeout: what arrives there is not looked at,
    and failing to read it is no failure of the request (its connection is closed instead)."""
    import aiohttp

    if content.is_eof():
        return
    try:
        async with asyncio.timeout(DRAIN_S):
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


# -- the run ----------------------------------------------------------------------------------------------------
@dataclass
class Report:
    config: LoadConfig
    wall_s: float
    results: list[RequestResult]
    server_models: list[str] | None = None  # ids and aliases /v1/models listed, when it answered
    client_cpus: list[int] | None = None  # the CPUs the load generator could run on (None: unknown on this OS)
    val_losses: dict[str, float] = field(default_factory=dict)  # each listed variant's val_loss

    def to_dict(self) -> dict:
        budget = Budget(self.config.max_tpot_ms, self.config.max_ttft_ms)
        return summarize(self.results, self.wall_s) | {
            "served": served(self.results, self.val_losses, budget if budget.set else None),
            "budget": budget_summary(self.results, self.wall_s, budget) if budget.set else None,
            "client_cpus": self.client_cpus, "config": _config_dict(self.config)}


def _config_dict(cfg: LoadConfig) -> dict:
    return {"url": cfg.url, "model": cfg.model, "concurrency": cfg.concurrency, "requests": cfg.requests,
            "duration_s": cfg.duration, "max_tokens": cfg.max_tokens, "prompt": cfg.prompt,
            "temperature": cfg.temperature, "seed": cfg.seed, "stream": cfg.stream, "timeout_s": cfg.timeout,
            "max_tpot_ms": cfg.max_tpot_ms, "max_ttft_ms": cfg.max_ttft_ms, "fallback": cfg.fallback}


def _client(cfg: LoadConfig) -> aiohttp.ClientSession:
    """One session for the probe and every client: a pool of concurrency + 1 keep-alive connections (+1 for the
    probe), no proxy from the environment, no timeout of its own (each request runs under asyncio.timeout)."""
    try:
        import aiohttp
    except ModuleNotFoundError as e:
        if e.name != "aiohttp":
            raise
        raise LoadTestError("`gptzoo loadtest` needs aiohttp, which is not installed: pip install 'gptzoo[serve]'") \
            from None

    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else None
    n = cfg.concurrency + 1  # +1 for the probe
    connector = aiohttp.TCPConnector(limit=n, limit_per_host=0, force_close=False)
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(),
                                 trust_env=False, raise_for_status=False)


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


async def run_async(cfg: LoadConfig, on_result: Callable[[RequestResult], None] | None = None) -> Report:
    """Probes the server, then runs `cfg.concurrency` clients until `cfg.requests` requests were sent or
    `cfg.duration` elapsed (in-flight requests finish, each within its timeout)."""
    cfg = cfg.validated()
    assert cfg.requests is not None
    async with _client(cfg) as client:
        models, losses = await probe(client, cfg)
        results: list[RequestResult] = []
        issued = 0
        start = time.perf_counter()
        deadline = start + min(cfg.duration or MAX_DURATION_S, MAX_DURATION_S)

        async def worker() -> None:
            nonlocal issued
            while issued < cfg.requests and time.perf_counter() < deadline:
                index = issued
                issued += 1
                result, backoff = await one_request(client, cfg, index)
                results.append(result)
                if on_result:
                    on_result(result)
                if backoff:
                    await asyncio.sleep(min(backoff, max(0.0, deadline - time.perf_counter())))

        await asyncio.gather(*(worker() for _ in range(min(cfg.concurrency, cfg.requests))))
        wall = time.perf_counter() - start
    return Report(cfg, wall, results, models, _client_cpus(), losses)


def _client_cpus() -> list[int] | None:
    """Recorded in the report so a run says whether it shared the server's cores (see gptzoo.measure.pinning)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def run(cfg: LoadConfig, on_result: Callable[[RequestResult], None] | None = None) -> Report:
    """On uvloop where it is installed: the client's own loop then takes less of its core, and a pinned run measures
    the server rather than the client."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_async(cfg, on_result))
    return uvloop.run(run_async(cfg, on_result))


# -- statistics -------------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default); None when
    there are no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def distribution_ms(values_s: Sequence[float]) -> dict:
    """n, mean, p50/p95/p99 and max of seconds, in milliseconds (None when empty)."""
    out: dict = {"n": len(values_s)}
    ms = [v * 1000 for v in values_s]
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(ms, q)
    out["mean"] = sum(ms) / len(ms) if ms else None
    out["max"] = max(ms) if ms else None
    return out


def tokens_source(results: Sequence[RequestResult]) -> str | None:
    """Where a run's completion tokens came from: "usage" (exact), "chunks" (the server sent no usage: text chunks
    counted, which is not a token count), "none" (plain answers without usage: 0 counted), "mixed", or None when no
    request succeeded."""
    sources = {r.tokens_from for r in results if r.ok}
    return None if not sources else sources.pop() if len(sources) == 1 else "mixed"


def summarize(results: Sequence[RequestResult], wall_s: float) -> dict:
    """The report of a run: counts, throughput, latency distributions (ms, successful requests only) and errors.
    `tokens_from` says how completion tokens were counted; `text_chunks` is the streamed chunks received, for
    comparison (ITL percentiles are gaps between those chunks)."""
    ok = [r for r in results if r.ok]
    tokens = sum(r.tokens for r in ok)
    errors = Counter(r.error for r in results if not r.ok)
    examples: dict[str, str] = {}
    for r in results:
        if not r.ok and r.error not in examples:
            examples[r.error] = (r.message or "")[:300]
    statuses = Counter(str(r.status) for r in results if r.status is not None)
    return {
        "requests": {"total": len(results), "ok": len(ok), "failed": len(results) - len(ok)},
        "wall_s": wall_s,
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else 0.0,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / wall_s if wall_s > 0 else 0.0,
        "tokens_from": tokens_source(ok),
        "text_chunks": sum(r.chunks for r in ok),
        "ttft_ms": distribution_ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "itl_ms": distribution_ms([g for r in ok for g in r.itl_s]),
        "e2e_ms": distribution_ms([r.e2e_s for r in ok]),
        "errors": {k: errors.get(k, 0) for k in ERROR_KINDS},
        "error_examples": examples,
        "status_codes": dict(sorted(statuses.items())),
    }


@dataclass(frozen=True)
class Budget:
    """The run's latency budget in ms, judged on what the client measured."""

    tpot_ms: float | None
    ttft_ms: float | None

    @property
    def set(self) -> bool:
        return self.tpot_ms is not None or self.ttft_ms is not None

    def met(self, r: RequestResult) -> bool:
        """A successful request whose TTFT and mean time per output token stayed within the budget; a plain
        (not streamed) answer has no TTFT, so its end-to-end time stands for it."""
        if not r.ok:
            return False
        ttft = r.ttft_s if r.ttft_s is not None else r.e2e_s
        if self.ttft_ms is not None and ttft * 1e3 > self.ttft_ms:
            return False
        tpot = r.tpot_s
        return self.tpot_ms is None or tpot is None or tpot * 1e3 <= self.tpot_ms


def budget_summary(results: Sequence[RequestResult], wall_s: float, budget: Budget) -> dict:
    """Requests within the budget (of all sent, failures count as missed) and goodput: those per second."""
    within = sum(budget.met(r) for r in results)
    return {"tpot_ms": budget.tpot_ms, "ttft_ms": budget.ttft_ms, "within": within,
            "within_share": within / len(results) if results else None,
            "goodput_per_s": within / wall_s if wall_s > 0 else 0.0,
            "tpot_ms_client": distribution_ms([t for r in results if r.ok and (t := r.tpot_s) is not None])}


def served(results: Sequence[RequestResult], val_losses: dict[str, float], budget: Budget | None = None) -> dict:
    """Successful requests by the variant that served them (with its route reasons, when the server says, and how
    many stayed within the budget, when there is one), and the mean validation loss of those variants over the
    requests (None when a variant's loss is unknown)."""
    by: dict[str, dict] = {}
    for r in results:
        if r.ok and r.model:
            m = by.setdefault(r.model, {"requests": 0, "val_loss": val_losses.get(r.model), "routes": Counter()}
                              | ({"within": 0} if budget else {}))
            m["requests"] += 1
            if budget:
                m["within"] += budget.met(r)
            if r.route:
                m["routes"][r.route] += 1
    n = sum(m["requests"] for m in by.values())
    known = all(m["val_loss"] is not None for m in by.values())
    mean = sum(m["val_loss"] * m["requests"] for m in by.values()) / n if n and known else None
    return {"models": {k: v | {"routes": dict(v["routes"])} for k, v in sorted(by.items())},
            "mean_val_loss": mean}
