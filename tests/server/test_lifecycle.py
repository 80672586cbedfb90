"""Requests under load and shutdown: the bounded queue (429), the queue timeout (503), draining (in-process and on a
real SIGTERM), with the refusal counters."""

import asyncio
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client import REGISTRY

from gptzoo.server.worker import Job, ModelWorker
from gptzoo.zoo.sampling import SamplingParams
from tests.server.conftest import MODEL, server_process, sse_events

L = {"model": MODEL, "layers": "2"}
BODY = {"model": "2l", "prompt": "ROMEO:"}


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, {**L, **labels}) or 0.0


def wait_until(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def hold_a_slot(worker: ModelWorker) -> Job:
    """A job handed straight to the worker that decodes until cancelled (its events go to a closed loop)."""
    async def make() -> Job:
        return Job([1, 2], SamplingParams(max_tokens=10**7, temperature=0), stream=False)

    job = asyncio.run(make())
    worker.submit(job)
    wait_until(lambda: value("gptzoo_requests_running") >= 1, "the held slot")
    return job


def test_full_queue_is_429_and_a_long_wait_is_503(make_client, exported_store, step_gate):
    client = make_client(exported_store, max_batch_size=1, max_waiting=1, request_timeout=1.0, threads=1)
    refused = {r: value("gptzoo_requests_refused_total", reason=r) for r in ("overloaded", "queue_timeout")}
    held = hold_a_slot(client.app.state.registry.workers[MODEL])
    try:
        with ThreadPoolExecutor(1) as pool:
            # Held at the gate the worker sweeps no queue, so the queued request cannot time out (after 1 s) before
            # the test has seen it wait and had the next one refused, however slow the machine is today.
            with step_gate.shut():
                step_gate.wait_held()
                # streamed, yet a real 503 when it times out in the queue: the answer starts only with the first
                # token
                queued = pool.submit(client.post, "/v1/completions", json={**BODY, "stream": True})
                wait_until(lambda: value("gptzoo_requests_waiting") == 1, "the queued request")
                r = client.post("/v1/completions", json=BODY)
                assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
                assert r.json()["error"]["code"] == "overloaded" and "requests waiting" in r.json()["error"]["message"]
            r = queued.result(timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        e = r.json()["error"]
        assert e["code"] == "queue_timeout" and "request timeout of 1 s" in e["message"], e
    finally:
        held.cancel()
    for reason, before in refused.items():
        assert value("gptzoo_requests_refused_total", reason=reason) == before + 1, reason
    # the worker sets the gauge just after it sends the 503 on its way: the answer can arrive first
    wait_until(lambda: value("gptzoo_requests_waiting") == 0, "the queue gauge back at 0")


def test_draining_finishes_queued_and_running_requests_and_refuses_new_ones(make_client, exported_store, step_gate):
    client = make_client(exported_store, max_batch_size=1, max_tokens=10_000, threads=1)
    router = client.app.state.registry
    with ThreadPoolExecutor(2) as pool:
        # Behind the shut gate the running request cannot finish (and free its slot for the queued one) before the
        # drain has begun; the machine's speed no longer decides which of the two the drain finds where.
        with step_gate.shut():
            running = pool.submit(client.post, "/v1/completions", json={**BODY, "max_tokens": 500})
            step_gate.wait_held()  # admitted and prefilled, held before its first decode step
            queued = pool.submit(client.post, "/v1/completions", json={**BODY, "max_tokens": 10})
            wait_until(lambda: value("gptzoo_requests_waiting") == 1, "the queued request")
            router.drain()  # what SIGTERM triggers
            r = client.post("/v1/completions", json=BODY)
            assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
            assert r.json()["error"]["code"] == "shutting_down"
            assert client.get("/readyz").status_code == 503  # load balancers stop sending
            assert not running.done() and not queued.done()
        finished = [f.result(timeout=60) for f in (running, queued)]
    assert [r.status_code for r in finished] == [200, 200], [r.text for r in finished]
    assert [r.json()["usage"]["completion_tokens"] for r in finished] == [500, 10]


def test_requests_still_running_at_the_drain_deadline_get_a_clear_error(make_client, exported_store):
    client = make_client(exported_store, max_tokens=10**6, shutdown_timeout=0.5, threads=1)
    with ThreadPoolExecutor(1) as pool:
        endless = pool.submit(client.post, "/v1/completions", json={**BODY, "max_tokens": 10**6})
        wait_until(lambda: value("gptzoo_requests_running") == 1, "the running request")
        client.app.state.registry.drain()
        r = endless.result(timeout=30)
    assert r.status_code == 503, r.text
    e = r.json()["error"]
    assert e["code"] == "shutting_down" and "shut down before this request finished" in e["message"]


@pytest.mark.slow
def test_sigterm_lets_the_stream_in_flight_finish_then_exits_0(tmp_path, exported_store):
    n = 5000
    with server_process(tmp_path, exported_store, "--max-tokens", n, "--shutdown-timeout", 30) as (proc, base, log):
        started, signalled, lines = threading.Event(), threading.Event(), []

        def stream() -> None:
            body = {**BODY, "max_tokens": n, "stream": True}
            with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    if not started.is_set():
                        started.set()
                        # read on only once the signal is sent: the client has the stream's first line and not its
                        # end when SIGTERM comes, however the threads are scheduled (counting the lines read by
                        # then depended on that, and on how many deltas the server coalesced per frame)
                        signalled.wait(60)

        reader = threading.Thread(target=stream)
        reader.start()
        try:
            assert started.wait(30)
            proc.send_signal(signal.SIGTERM)
        finally:
            signalled.set()
        assert lines[0].startswith("data: ") and "[DONE]" not in lines[0]
        try:  # during the drain: the listening socket closes soon, until then the app refuses
            r = httpx.post(f"{base}/v1/completions", json=BODY, timeout=10)
            assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down", r.text
        except httpx.TransportError:
            pass
        reader.join(60)
        assert proc.wait(timeout=60) == 0, log.read_text()
    events = sse_events("\n".join(lines))
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]" and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len("".join(c["choices"][0]["text"] for c in chunks)) == n  # one character per token
    assert "Traceback" not in log.read_text()


def test_a_failed_engine_step_fails_its_requests_and_the_model_serves_on(make_client, exported_store, monkeypatch):
    """The rows in flight get a 500 with the reason; their cache slots are freed (the cache is reused, not
    reallocated) and the next request is answered."""
    from gptzoo.zoo.generate import Batch

    client = make_client(exported_store, max_tokens=64, max_batch_size=1, threads=1)
    step, calls = Batch.step, []

    def failing_once(self, *args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("onnxruntime said no")
        return step(self, *args)

    monkeypatch.setattr(Batch, "step", failing_once)
    body = {"model": "2l", "prompt": "ROMEO:", "max_tokens": 5, "temperature": 0}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 500 and r.json()["error"]["code"] == "generation_failed"
    assert "onnxruntime said no" in r.json()["error"]["message"]
    ok = client.post("/v1/completions", json=body)  # the one slot is free again
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 5


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_stops_at_once_with_a_non_zero_status_and_no_traceback(tmp_path, exported_store, sig):
    """Issue 22: a second Ctrl-C used to end with status 0 and one ASGI traceback per running stream, a second
    SIGTERM did nothing. Four streams that would run for minutes, and a drain that would wait for them for 10."""
    n, streams = 10**6, 4
    flags = ("--max-tokens", n, "--shutdown-timeout", 600, "--max-batch-size", streams)
    with server_process(tmp_path, exported_store, *flags) as (proc, base, log):
        started = threading.Barrier(streams + 1)

        def stream() -> None:
            try:
                with httpx.stream("POST", f"{base}/v1/completions", timeout=120,
                                  json={**BODY, "max_tokens": n, "stream": True}) as r:
                    lines = r.iter_lines()
                    next(lines)
                    started.wait(60)
                    for _ in lines:  # until the server is gone
                        pass
            except httpx.TransportError:
                pass

        readers = [threading.Thread(target=stream, daemon=True) for _ in range(streams)]
        for t in readers:
            t.start()
        started.wait(60)
        proc.send_signal(sig)
        # the first signal is handled (a second one sent before might be merged with it by the OS)
        wait_until(lambda: f"a second {sig.name} stops at once" in log.read_text(), "the first signal", 60)
        assert proc.poll() is None  # draining: it waits for the streams
        proc.send_signal(sig)
        status = proc.wait(timeout=60)
        for t in readers:
            t.join(60)
    text = log.read_text()
    assert status == 128 + sig, text
    assert f"second {sig.name}: exiting now" in text and "Traceback" not in text, text
