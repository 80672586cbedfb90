"""`gptzoo loadtest`: the statistics, the SSE client on canned answers (a real aiohttp server on 127.0.0.1), the URL
guard, CPU pinning, and real runs against `gptzoo serve` on the tiny exported variant."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable

import numpy as np
import pytest
from aiohttp import web
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.measure import loadtest as lt
from gptzoo.measure.loadclient import ERROR_KINDS, RequestResult, classify_status, one_request
from gptzoo.measure.loadconfig import LoadConfig, LoadTestError, RemoteNotAllowed, check_url
from gptzoo.measure.loadstats import percentile, summarize
from gptzoo.measure.pinning import CpuListError, check_cpus, format_cpus, parse_cpus
from tests.server.conftest import MODEL, free_port, gptzoo, live_server

runner = CliRunner()


# -- statistics ---------------------------------------------------------------------------------------------------
def test_percentile_matches_numpys_linear_interpolation():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 101, 1000):
        xs = list(rng.exponential(size=n))
        for q in (0, 1, 50, 90, 95, 99, 100):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_counts_throughput_latencies_and_errors():
    ok = [RequestResult(ok=True, status=200, ttft_s=0.01 * (i + 1), itl_s=[0.001, 0.002], e2e_s=0.1 * (i + 1),
                        tokens=10) for i in range(10)]
    bad = [RequestResult(ok=False, status=429, error="http_429", message="busy", e2e_s=0.001),
           RequestResult(ok=False, status=404, error="http_4xx", message="unknown model", e2e_s=0.001),
           RequestResult(ok=False, status=404, error="http_4xx", message="unknown model again", e2e_s=0.001),
           RequestResult(ok=False, error="timeout", message="slow", e2e_s=5.0)]
    s = summarize(ok + bad, wall_s=2.0)
    assert s["requests"] == {"total": 14, "ok": 10, "failed": 4}
    assert s["tokens_from"] is None  # these results do not say where their tokens came from
    assert s["completion_tokens"] == 100 and s["tokens_per_s"] == 50.0 and s["requests_per_s"] == 5.0
    assert s["errors"] == {**dict.fromkeys(ERROR_KINDS, 0), "http_429": 1, "http_4xx": 2, "timeout": 1}
    assert s["error_examples"] == {"http_429": "busy", "http_4xx": "unknown model", "timeout": "slow"}
    assert s["status_codes"] == {"200": 10, "404": 2, "429": 1}
    # latencies in ms, over successful requests only (the 5 s timeout is not in e2e)
    assert s["e2e_ms"]["n"] == 10 and s["e2e_ms"]["max"] == pytest.approx(1000.0)
    assert s["ttft_ms"]["p50"] == pytest.approx(55.0) and s["ttft_ms"]["mean"] == pytest.approx(55.0)
    assert s["itl_ms"]["n"] == 20 and s["itl_ms"]["p50"] == pytest.approx(1.5)
    for key in ("ttft_ms", "itl_ms", "e2e_ms"):
        d = s[key]
        assert d["p50"] <= d["p95"] <= d["p99"] <= d["max"]


def test_summary_says_where_the_tokens_came_from():
    def results(*sources):
        return [RequestResult(ok=True, tokens=4, chunks=2, tokens_from=src) for src in sources]

    assert summarize(results("usage", "usage"), 1.0)["tokens_from"] == "usage"
    assert summarize(results("chunks", "chunks"), 1.0)["tokens_from"] == "chunks"
    assert summarize(results("usage", "chunks"), 1.0)["tokens_from"] == "mixed"
    failed = RequestResult(ok=False, error="timeout", tokens_from="chunks")  # failures do not count
    s = summarize([*results("usage"), failed], 1.0)
    assert s["tokens_from"] == "usage" and s["text_chunks"] == 2 and s["completion_tokens"] == 4


def test_summary_of_nothing_has_no_percentiles():
    s = summarize([], wall_s=0.0)
    assert s["requests"]["total"] == 0 and s["tokens_per_s"] == 0.0
    assert s["ttft_ms"] == {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}


def test_status_classification():
    assert [classify_status(s) for s in (429, 503, 400, 401, 404, 413, 500, 502, 302)] == [
        "http_429", "http_503", "http_4xx", "http_4xx", "http_4xx", "http_4xx", "http_5xx", "http_5xx", "protocol"]


# -- URL guard and options ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.9.8.7", "http://localhost:1234/",
                                 "http://[::1]:8000", "https://LOCALHOST/v1"])
def test_loopback_urls_are_accepted(url):
    assert not check_url(url).endswith(("/", "/v1"))


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://192.0.2.1", "https://example.com",
                                 "http://[2001:db8::1]:80", "http://128.0.0.1"])
def test_remote_urls_need_allow_remote(url):
    with pytest.raises(RemoteNotAllowed):
        check_url(url)
    assert check_url(url, allow_remote=True)


@pytest.mark.parametrize("cfg", [dict(model=""), dict(concurrency=0), dict(requests=0), dict(requests=10**6),
                                 dict(duration=0), dict(duration=10**5), dict(timeout=0), dict(url="ftp://x"),
                                 dict(max_tpot_ms=0), dict(max_ttft_ms=float("nan")), dict(fallback="deeper")])
def test_bad_options_are_refused(cfg):
    with pytest.raises(LoadTestError):
        LoadConfig(**{"model": "2l", **cfg}).validated()


def test_budget_verdicts_goodput_and_what_served():
    ok = dict(ok=True, status=200, tokens_from="usage")
    results = [
        RequestResult(**ok, ttft_s=0.010, e2e_s=0.010 + 9 * 0.002, tokens=10, model="a-4l", route="best-fit"),
        RequestResult(**ok, ttft_s=0.010, e2e_s=0.010 + 9 * 0.004, tokens=10, model="a-12l", route="best-fit"),
        RequestResult(**ok, ttft_s=0.200, e2e_s=0.210, tokens=2, model="a-1l", route="fallback-overload"),
        RequestResult(**ok, e2e_s=0.005, tokens=1, model="a-1l", route="fastest-no-fit"),  # plain: e2e for TTFT
        RequestResult(ok=False, status=429, error="http_429"),
    ]
    from gptzoo.measure.loadstats import ClientBudget, client_budget_summary, served

    b = client_budget_summary(results, 2.0, ClientBudget(tpot_ms=3, ttft_ms=100))
    assert (b["within"], b["within_share"], b["goodput_per_s"]) == (2, 2 / 5, 1.0)  # the 4l one and the plain one
    assert b["tpot_ms_client"]["n"] == 3
    s = served(results, {"a-4l": 1.5, "a-12l": 1.4, "a-1l": 2.0})
    assert s["models"]["a-1l"] == {"requests": 2, "val_loss": 2.0,
                                   "routes": {"fallback-overload": 1, "fastest-no-fit": 1}}
    assert s["mean_val_loss"] == pytest.approx((1.5 + 1.4 + 2 * 2.0) / 4)
    assert served(results, {"a-4l": 1.5})["mean_val_loss"] is None  # a loss unknown: no mean made up
    within = served(results, {}, ClientBudget(tpot_ms=3, ttft_ms=100))["models"]
    assert {k: v["within"] for k, v in within.items()} == {"a-12l": 0, "a-4l": 1, "a-1l": 1}


def test_limits_resolve_from_requests_and_duration():
    assert LoadConfig(model="2l").validated().requests == 100
    assert LoadConfig(model="2l", duration=5).validated().requests == 100_000
    assert LoadConfig(model="2l", duration=5, requests=7).validated().requests == 7


def test_cli_refuses_a_remote_host_with_exit_2():
    r = runner.invoke(app, ["loadtest", "--model", "2l", "--url", "http://192.0.2.1:8000"])
    assert r.exit_code == 2
    assert r.stderr.strip().count("\n") == 0 and "--allow-remote" in r.stderr


def test_cli_unreachable_server_exits_1_with_one_line():
    r = runner.invoke(app, ["loadtest", "--model", "2l", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "5"])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: cannot reach") and r.stderr.strip().count("\n") == 0
    assert "Traceback" not in r.output


# -- the client on canned answers ---------------------------------------------------------------------------------
class CannedServer:
    """Real HTTP servers on 127.0.0.1 (port 0), run by aiohttp in a thread and event loop of their own, so the load
    generator talks to them over the wire as it does to a real server.

    `url`: GET /v1/models lists "2l"; POST /v1/completions answers with `reply(request)`, a web response (or a
    coroutine of one); the JSON bodies, headers and client ports of the completions are kept. `raw_url`: reads one
    request and writes the bytes `raw`, whatever they are, then closes the connection (broken answers)."""

    def __init__(self):
        self.reply: Callable = lambda request: web.Response(status=500)
        self.raw = b""
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.ports: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="canned-server", daemon=True)

    def __enter__(self) -> CannedServer:
        self.thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=60)
        self.loop.close()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        # handler_cancellation: a handler that never answers ends when the client gives up
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.raw_server = await asyncio.start_server(self._raw, "127.0.0.1", 0)
        self.raw_url = f"http://127.0.0.1:{self.raw_server.sockets[0].getsockname()[1]}"

    async def _stop(self) -> None:
        self.raw_server.close()
        await self.runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "2l"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        self.ports.append(request.transport.get_extra_info("peername")[1])
        response = self.reply(request)
        return await response if inspect.isawaitable(response) else response

    async def _raw(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")  # the whole request is read, so closing sends FIN, not RST
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        await reader.readexactly(int(length[1]) if length else 0)
        writer.write(self.raw)
        await writer.drain()
        writer.close()


@pytest.fixture
def canned():
    with CannedServer() as server:
        yield server


def sse(*events: str) -> bytes:
    return "".join(f"data: {e}\n\n" for e in events).encode()


def chunk(text: str, finish=None, usage=None) -> str:
    c = {"object": "text_completion", "choices": [{"text": text, "index": 0, "finish_reason": finish}]}
    if usage:
        c["usage"] = usage
    return json.dumps(c)


SSE = {"content-type": "text/event-stream; charset=utf-8"}


def respond(body: bytes | dict, status: int = 200, headers: dict | None = None) -> Callable:
    """A canned reply: JSON for a dict, else the bytes as they are (an SSE stream unless headers say otherwise)."""
    if isinstance(body, dict):
        return lambda request: web.json_response(body, status=status, headers=headers)
    return lambda request: web.Response(status=status, body=body, headers=headers or SSE)


def answer(url: str, **cfg) -> tuple[RequestResult, float]:
    """one_request over the load generator's own client (lt._client); returns (result, backoff)."""

    async def go():
        config = LoadConfig(url=url, model="2l", **cfg).validated()
        async with lt._client(config) as client:
            return await one_request(client, config, 0)

    return asyncio.run(go())


def test_stream_measures_ttft_itl_and_takes_tokens_from_usage(canned):
    body = sse(chunk("RO"), chunk("ME"), chunk(""), chunk("O", "length"),
               json.dumps({"choices": [], "usage": {"completion_tokens": 5}}), "[DONE]")
    canned.reply = respond(body)
    r, backoff = answer(canned.url, seed=3, temperature=0.5, max_tokens=5, api_key="k3y")
    assert r.ok and r.status == 200 and r.error is None and backoff == 0
    assert r.tokens == 5 and r.tokens_from == "usage" and r.chunks == 3
    assert len(r.itl_s) == 2 and 0 <= r.ttft_s <= r.e2e_s
    assert canned.bodies == [{"model": "2l", "prompt": "ROMEO:", "max_tokens": 5, "stream": True, "seed": 3,
                              "temperature": 0.5, "stream_options": {"include_usage": True}}]
    assert canned.headers[0]["Authorization"] == "Bearer k3y"
    assert canned.headers[0]["Content-Type"] == "application/json"


def test_coalesced_chunks_count_the_tokens_usage_gives(canned):
    # the server coalesced 64 tokens into 3 chunks (a client behind the decode): 64 tokens, not 3
    canned.reply = respond(sse(chunk("R" * 1), chunk("O" * 40), chunk("M" * 23), chunk("", "length"),
                               json.dumps({"choices": [], "usage": {"prompt_tokens": 6, "completion_tokens": 64,
                                                                    "total_tokens": 70}}), "[DONE]"))
    r, _ = answer(canned.url, max_tokens=64)
    assert r.ok and r.tokens == 64 and r.tokens_from == "usage" and r.chunks == 3 and len(r.itl_s) == 2


def test_stream_without_usage_counts_chunks_and_says_so(canned):
    canned.reply = respond(sse(chunk("a"), chunk("b"), "[DONE]"))
    r, _ = answer(canned.url)
    assert r.ok and r.tokens == 2 and r.tokens_from == "chunks" and r.chunks == 2 and len(r.itl_s) == 1


def test_sse_lines_that_are_not_data_are_skipped(canned):
    # comments, event: and id: lines, CRLF line ends, "data:" without its space
    body = (b": keep-alive\r\n\r\nevent: completion\r\nid: 1\r\ndata: " + chunk("ab").encode() + b"\r\n\r\n"
            b"data:" + chunk("c").encode() + b"\n\ndata: [DONE]\n\n")
    canned.reply = respond(body)
    r, _ = answer(canned.url)
    assert r.ok and r.chunks == 2 and r.tokens == 2 and r.tokens_from == "chunks"


def test_a_server_that_ignores_include_usage_is_reported_as_counted_chunks(canned, monkeypatch):
    # another OpenAI-compatible server: stream_options ignored, no usage chunk, "abc" coalesced into two chunks
    canned.reply = respond(sse(chunk("ab"), chunk("c"), chunk("", "stop"), "[DONE]"))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # ignored: no proxy from the environment
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    r = runner.invoke(app, ["loadtest", "--url", canned.url, "-m", "2l", "-n", 6, "-c", 2, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["requests"]["ok"] == 6 and d["tokens_from"] == "chunks"
    assert d["completion_tokens"] == d["text_chunks"] == 12  # chunks, flagged as such: not tokens
    assert all(b["stream_options"] == {"include_usage": True} for b in canned.bodies) and len(canned.bodies) == 6
    assert "no usage" in r.stderr and "not exact" in r.stderr
    table = runner.invoke(app, ["loadtest", "--url", canned.url, "-m", "2l", "-n", 2], env={"COLUMNS": "160"})
    assert table.exit_code == 0 and "text chunks counted" in table.stdout


def test_plain_answers_without_usage_count_nothing_and_say_so(canned):
    canned.reply = respond({"choices": [{"text": "abc"}]})
    r = runner.invoke(app, ["loadtest", "--url", canned.url, "-m", "2l", "-n", 3, "--no-stream", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["tokens_from"] == "none" and d["completion_tokens"] == 0 and "0 counted" in r.stderr
    assert [b["stream"] for b in canned.bodies] == [False] * 3 and "stream_options" not in canned.bodies[0]


@pytest.mark.parametrize(("status", "kind"),
                         [(404, "http_4xx"), (400, "http_4xx"), (503, "http_503"), (500, "http_5xx")])
def test_http_errors_are_classified_with_the_servers_message(canned, status, kind):
    canned.reply = respond({"error": {"message": f"failed with {status}", "type": "x"}}, status)
    r, backoff = answer(canned.url)
    assert not r.ok and r.status == status and r.error == kind and r.message == f"failed with {status}"
    assert backoff == 0


def test_a_redirect_is_not_followed(canned):
    canned.reply = lambda request: web.Response(status=302, headers={"Location": "/v1/models"})
    r, _ = answer(canned.url)
    assert not r.ok and r.status == 302 and r.error == "protocol"


def test_429_is_classified_and_retry_after_is_obeyed_up_to_a_cap(canned):
    canned.reply = respond({"detail": "slow down"}, 429, {"Retry-After": "1"})
    r, backoff = answer(canned.url)
    assert r.error == "http_429" and r.status == 429 and r.message == "slow down" and backoff == 1.0
    canned.reply = respond({}, 429, {"Retry-After": "0.25"})
    assert answer(canned.url)[1] == 0.25
    canned.reply = respond({}, 429, {"Retry-After": "3600"})
    assert answer(canned.url)[1] == 1.0
    canned.reply = respond({}, 429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})  # a date: not obeyed
    assert answer(canned.url)[1] == 0.0


@pytest.mark.parametrize(("body", "headers", "kind"), [
    (sse(chunk("a")), SSE, "protocol"),  # no [DONE]
    (sse("{not json", "[DONE]"), SSE, "protocol"),
    (sse("[1, 2]", "[DONE]"), SSE, "protocol"),  # JSON, not an object
    (b'{"choices": []}', {"content-type": "application/json"}, "protocol"),  # not a stream
    (sse(chunk("a"), json.dumps({"error": {"message": "generation failed"}}), "[DONE]"), SSE, "stream_error"),
])
def test_broken_streams_are_classified(canned, body, headers, kind):
    canned.reply = respond(body, headers=headers)
    r, _ = answer(canned.url)
    assert not r.ok and r.error == kind and r.status == 200
    if kind == "stream_error":
        assert r.message == "generation failed"


STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize("raw", [
    b"",  # the server closed the connection without an answer
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",  # not HTTP
    STREAM_HEAD + http_chunk(sse(chunk("a"))),  # the connection closed inside a chunked body
    STREAM_HEAD + http_chunk(sse(chunk("a"))) + b"zz\r\n",  # a chunk size that is not hexadecimal
])
def test_broken_connections_are_protocol_errors(canned, raw):
    canned.raw = raw
    r, _ = answer(canned.raw_url)
    assert not r.ok and r.error == "protocol" and r.message


def test_transport_failures_are_connection_or_timeout(canned):
    refused = answer(f"http://127.0.0.1:{free_port()}")[0]  # nothing listens there
    assert refused.error == "connection" and refused.status is None and refused.message

    async def never_answer(request):
        await asyncio.Event().wait()

    canned.reply = never_answer
    r, _ = answer(canned.url, timeout=0.2)
    assert r.error == "timeout" and r.status is None and r.message == "no complete answer within 0.2 s"

    async def stall_inside_the_stream(request):
        response = web.StreamResponse(headers=SSE)
        await response.prepare(request)
        await response.write(sse(chunk("a")))
        await asyncio.Event().wait()

    canned.reply = stall_inside_the_stream
    r, _ = answer(canned.url, timeout=0.2)
    assert r.error == "timeout" and r.status == 200 and not r.ok


def test_plain_json_answers_take_tokens_from_usage(canned):
    canned.reply = respond({"object": "text_completion", "choices": [{"text": "abc"}],
                            "usage": {"completion_tokens": 3}})
    r, _ = answer(canned.url, stream=False)
    assert r.ok and r.tokens == 3 and r.tokens_from == "usage" and r.ttft_s is None and r.itl_s == []


def late_end(keep_open: bool = False) -> Callable:
    """A stream whose HTTP body ends after [DONE] was read (the chunked terminator in a later read), or never."""

    async def reply(request):
        response = web.StreamResponse(headers=SSE)
        await response.prepare(request)
        await response.write(sse(chunk("a"), json.dumps({"choices": [], "usage": {"completion_tokens": 1}}),
                                 "[DONE]"))
        await asyncio.sleep(0.01)
        if keep_open:
            await asyncio.Event().wait()
        await response.write_eof()
        return response

    return reply


def test_connections_are_kept_alive_across_requests(canned, monkeypatch):
    monkeypatch.setattr(lt, "DRAIN_S", 600.0)  # so the test cannot depend on how fast this machine is
    canned.reply = late_end()
    report = lt.run(LoadConfig(url=canned.url, model="2l", concurrency=1, requests=5))
    assert [r.ok for r in report.results] == [True] * 5 and report.server_models == ["2l"]
    assert len(set(canned.ports)) == 1  # one connection for all five (the probe's, given back to the pool)


def test_a_body_left_open_after_done_is_no_failure(canned, monkeypatch):
    monkeypatch.setattr(lt, "DRAIN_S", 0.05)  # only bounds the wait: the request is complete at [DONE]
    canned.reply = late_end(keep_open=True)
    r, _ = answer(canned.url, timeout=600)
    assert r.ok and r.tokens == 1 and r.tokens_from == "usage"


def test_concurrency_is_bounded_by_the_pool(canned):
    canned.reply = respond(sse(chunk("a"), "[DONE]"))
    report = lt.run(LoadConfig(url=canned.url, model="2l", concurrency=3, requests=30))
    assert sum(r.ok for r in report.results) == 30
    assert len(set(canned.ports)) <= 4  # concurrency + 1 (the probe's), kept alive


class OneAnswerPerConnection:
    """A real HTTP server that answers the first request on each connection in full (a chunked SSE stream, no
    `Connection: close`) and closes the connection when the next request comes on it, unanswered: what llama.cpp's
    llama-server does to kept-alive connections (issue 27). Deterministic: the close waits for the reused request."""

    def __init__(self):
        self.answered = 0  # completions streamed
        self.dropped = 0  # requests that came on a kept-alive connection and were closed on, unread

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        await reader.readexactly(int(length[1]) if length else 0)
        if head.startswith(b"GET /v1/models"):
            body = json.dumps({"data": [{"id": "2l"}]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(body), body))
        else:
            self.answered += 1
            events = sse(chunk("a"), chunk("b"), json.dumps({"choices": [], "usage": {"completion_tokens": 2}}),
                         "[DONE]")
            writer.write(STREAM_HEAD + http_chunk(events) + b"0\r\n\r\n")
        await writer.drain()
        if await reader.read(1):  # the next request on this connection: closed on, unanswered
            self.dropped += 1
        writer.close()


def test_a_request_on_a_kept_alive_connection_the_server_closed_goes_again_once_counted():
    server = OneAnswerPerConnection()

    async def go():
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        async with listener:
            return await lt.run_async(LoadConfig(url=url, model="2l", concurrency=2, requests=12))

    report = asyncio.run(go())
    summary = report.to_dict()
    assert [r.ok for r in report.results] == [True] * 12 and summary["requests"]["failed"] == 0
    assert server.answered == 12 and summary["completion_tokens"] == 24  # each request answered and counted once
    assert server.dropped >= 10  # every request after a connection's first found its connection closed ...
    assert summary["reconnected"] == sum(r.reconnected for r in report.results) >= 10  # ... and went again


def test_a_fresh_connection_closed_without_an_answer_is_not_sent_again(canned):
    canned.raw = b""  # reads the request, closes: a fresh connection is not retried, whatever the error
    r, _ = answer(canned.raw_url)
    assert not r.ok and r.error == "protocol" and not r.reconnected


# -- CPU pinning --------------------------------------------------------------------------------------------------
def test_cpu_lists_parse_like_taskset():
    assert parse_cpus("0") == {0} and parse_cpus("1,3") == {1, 3} and parse_cpus("0-2, 5") == {0, 1, 2, 5}
    assert format_cpus({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8" and format_cpus({3}) == "3"
    for bad in ("", "x", "-1", "1-0", "0,", "1.5", "0-99999999"):
        with pytest.raises(CpuListError, match="invalid CPU list"):
            parse_cpus(bad)


def test_cpus_this_process_may_not_use_are_refused():
    have = os.sched_getaffinity(0)
    assert check_cpus(format_cpus(have)) == have
    with pytest.raises(CpuListError, match="may not use"):
        check_cpus(str(max(have) + 1))


@pytest.mark.parametrize("cpus", ["99999", "zero", "0-"])
def test_cli_refuses_a_bad_cpu_list_with_exit_2(cpus):
    r = runner.invoke(app, ["loadtest", "--model", "2l", "--cpus", cpus])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: --cpus:") and r.stderr.strip().count("\n") == 0


def test_pinning_where_the_os_cannot_is_a_clear_error(monkeypatch):
    monkeypatch.delattr(os, "sched_setaffinity")
    with pytest.raises(CpuListError, match="not supported"):
        check_cpus("0")
    r = runner.invoke(app, ["loadtest", "--model", "2l", "--cpus", "0"])
    assert r.exit_code == 2 and "not supported on this system" in r.stderr


PIN_PROBE = """
import json, os, subprocess, sys, threading
from gptzoo.measure.pinning import pin
go = threading.Event()
early = threading.Thread(target=go.wait, daemon=True)  # a thread that exists before the pin
early.start()
pin([{cpu}])
late = []
t = threading.Thread(target=lambda: late.append(sorted(os.sched_getaffinity(0))))
t.start(); t.join()
child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                       capture_output=True, text=True, check=True).stdout
print(json.dumps({{"main": sorted(os.sched_getaffinity(0)), "early": sorted(os.sched_getaffinity(early.native_id)),
                  "late": late[0], "child": json.loads(child)}}))
go.set()
"""


def test_pin_covers_every_thread_and_child_process():
    cpu = max(os.sched_getaffinity(0))  # on 2+ cores this is a real restriction of the default mask
    out = subprocess.run([sys.executable, "-c", PIN_PROBE.format(cpu=cpu)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert json.loads(out) == {"main": [cpu], "early": [cpu], "late": [cpu], "child": [cpu]}


# -- against `gptzoo serve` ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory, exported_store):
    tmp = tmp_path_factory.mktemp("loadtest")
    store = tmp / "store"
    shutil.copytree(exported_store, store)
    with live_server(tmp, store) as (base, _log):
        yield base


def loadtest(*args) -> dict:
    r = runner.invoke(app, ["loadtest", *map(str, args), "--json", "--timeout", 30])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.slow
def test_twenty_streamed_requests_at_concurrency_four(server):
    d = loadtest("--url", server, "--model", "2l", "--requests", 20, "--concurrency", 4, "--max-tokens", 12)
    assert d["requests"] == {"total": 20, "ok": 20, "failed": 0}
    assert d["completion_tokens"] == 20 * 12  # a char model: one token per character, no end-of-text
    assert d["tokens_per_s"] > 0 and d["requests_per_s"] > 0 and d["wall_s"] > 0
    assert set(d["errors"]) == set(ERROR_KINDS) and not any(d["errors"].values())
    assert d["status_codes"] == {"200": 20}
    # The server coalesces the deltas that pile up while a client is busy, so how many frames (hence gaps) a stream
    # has depends on scheduling: 0 to 11 per 12-token stream. The gaps' measurement is proven on canned streams above.
    assert d["ttft_ms"]["n"] == d["e2e_ms"]["n"] == 20 and 0 <= d["itl_ms"]["n"] <= 20 * 11
    assert d["tokens_from"] == "usage" and d["client_cpus"] == sorted(os.sched_getaffinity(0))
    for key in ("ttft_ms", "itl_ms", "e2e_ms"):
        x = d[key]
        if x["n"]:
            assert 0 < x["p50"] <= x["p95"] <= x["p99"] <= x["max"], (key, x)
    assert d["ttft_ms"]["p50"] <= d["e2e_ms"]["p50"]
    assert d["config"] == {"url": server, "model": "2l", "concurrency": 4, "requests": 20, "duration_s": None,
                           "max_tokens": 12, "prompt": "ROMEO:", "temperature": None, "seed": None, "stream": True,
                           "timeout_s": 30.0, "max_tpot_ms": None, "max_ttft_ms": None, "fallback": None}
    assert d["budget"] is None and d["served"]["models"][MODEL]["requests"] == 20
    assert d["served"]["models"][MODEL]["routes"] == {"named": 20} and d["served"]["mean_val_loss"] > 0


@pytest.mark.slow
def test_streamed_tokens_are_the_servers_usage_however_chunks_coalesce(server):
    # 8 clients behind a decode of thousands of tokens/s: the server coalesces deltas as they pile up, so how many
    # chunks arrive depends on scheduling; the tokens may not. No end-of-text: every request makes max_tokens.
    d = loadtest("--url", server, "--model", "2l", "--requests", 16, "--concurrency", 8, "--max-tokens", 64)
    assert d["requests"]["ok"] == 16 and d["tokens_from"] == "usage"
    assert d["completion_tokens"] == 16 * 64
    assert 16 <= d["text_chunks"] <= 16 * 64  # one chunk holds one token or more; counting them was wrong
    assert d["itl_ms"]["n"] == d["text_chunks"] - 16  # ITL: gaps between chunks


@pytest.mark.slow
def test_loadtest_pins_itself_and_says_so(server):
    cpu = max(os.sched_getaffinity(0))
    r = subprocess.run([*gptzoo("loadtest", "--url", server, "-m", "2l", "-n", 4, "--max-tokens", 4, "--cpus", cpu),
                        "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["client_cpus"] == [cpu] and d["requests"]["ok"] == 4 and d["tokens_from"] == "usage"


@pytest.mark.slow
def test_unknown_model_is_counted_as_http_4xx_and_exits_0(server):
    r = runner.invoke(app, ["loadtest", "--url", server, "--model", "no-such-model", "--requests", 6, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["requests"] == {"total": 6, "ok": 0, "failed": 6}
    assert d["errors"]["http_4xx"] == 6 and d["status_codes"] == {"404": 6}
    assert MODEL in d["error_examples"]["http_4xx"]  # the server's message lists the available models
    assert d["e2e_ms"]["p50"] is None and d["tokens_per_s"] == 0
    assert "does not list model 'no-such-model'" in r.stderr


@pytest.mark.slow
def test_no_stream_and_duration_with_full_id(server):
    d = loadtest("--url", f"{server}/v1", "--model", MODEL, "--no-stream", "--duration", 1, "--concurrency", 2,
                 "--max-tokens", 4, "--seed", 1)
    assert d["requests"]["ok"] == d["requests"]["total"] > 0 and d["config"]["requests"] == 100_000
    assert d["completion_tokens"] == 4 * d["requests"]["ok"]
    assert d["ttft_ms"]["n"] == 0 and d["itl_ms"]["n"] == 0 and d["e2e_ms"]["n"] == d["requests"]["ok"]
    # the duration ended the run (no new request after 1 s), not the request cap; how long the last ones took is
    # the machine's business
    assert d["wall_s"] >= 1.0 and d["requests"]["total"] < d["config"]["requests"]


@pytest.mark.slow
def test_auto_with_a_budget_reports_goodput_and_what_served(server):
    d = loadtest("--url", server, "--model", "auto", "-n", 6, "-c", 2, "--max-tokens", 6, "--max-tpot-ms", 60_000,
                 "--max-ttft-ms", 60_000, "--fallback", "shallower")
    assert d["requests"]["ok"] == 6 and d["config"]["max_tpot_ms"] == 60_000 and d["config"]["fallback"] == "shallower"
    assert d["budget"]["within"] == 6 and d["budget"]["within_share"] == 1.0 and d["budget"]["goodput_per_s"] > 0
    assert d["served"]["models"][MODEL]["routes"] == {"best-fit": 6}
    r = runner.invoke(app, ["loadtest", "--url", server, "-m", "auto", "-n", 2, "--max-tokens", 3, "--max-tpot-ms",
                            60_000], env={"COLUMNS": "120"})
    assert r.exit_code == 0 and "within budget" in r.stdout and "goodput" in r.stdout, r.output


@pytest.mark.slow
def test_table_output(server):
    r = runner.invoke(app, ["loadtest", "--url", server, "-m", "2l", "-n", 4, "-c", 2, "--max-tokens", 4],
                      env={"COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    for phrase in ("requests ok / failed", "4 / 0", "tokens/s", "TTFT", "ITL", "end-to-end", "p99"):
        assert phrase in r.stdout


def test_cli_refuses_a_bad_budget_with_exit_2():
    r = runner.invoke(app, ["loadtest", "-m", "auto", "--max-tpot-ms", "-1"])
    assert r.exit_code == 2 and "max_tpot_ms must be a number over 0" in r.output
