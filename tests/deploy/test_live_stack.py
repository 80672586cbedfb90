"""Proof that the dashboard works: the real `prometheus` binary scrapes a real `gptzoo serve` under a short load,
and every panel's PromQL, evaluated through Prometheus' HTTP API, parses and returns series. The server serves the
2-layer variant drafted by the 1-layer one (`--models 2l --draft 2l=1l`), so the speculative-decoding panels have
series too."""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from tests.deploy.conftest import dashboard, panel_exprs, substitute
from tests.server.conftest import MODEL, free_port, live_server, metric

DRAFT = "shakespeare-char-1l"

pytestmark = pytest.mark.slow


def wait_for(check, what: str, timeout: float = 30.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while True:
        assert proc is None or proc.poll() is None, f"prometheus exited with {proc.returncode}"
        try:
            if result := check():
                return result
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def query(prom: str, expr: str) -> list[dict]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def post(base: str, **body) -> httpx.Response:
    return httpx.post(f"{base}/v1/completions", json=body, timeout=30)


def drive_load(base: str, n: int) -> int:
    """n completions (every third streamed), 4 at a time; returns the tokens generated."""
    def one(i: int) -> int:
        body = {"model": "2l", "prompt": "ROMEO:", "max_tokens": 8 + i % 24, "stream": i % 3 == 0, "seed": i}
        if i % 4 == 1:  # depth routing with a budget: generous (within) or impossible (over)
            body |= {"model": "auto", "max_tpot_ms": 60_000 if i % 8 == 1 else 1e-6}
        r = post(base, **body)
        assert r.status_code == 200, r.text
        return 8 + i % 24
    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(one, range(n)))


def of_model(expr: str) -> str:
    """A panel's expr with $model set to the served variant (the draft, listed but unloaded, has series too)."""
    return substitute(expr.replace("$model", MODEL))


def drive_alone(base: str, n: int) -> None:
    """n greedy completions one after the other: a row alone in the batch drafts (one of them opts out)."""
    for i in range(n):
        r = post(base, model="2l", prompt="ROMEO:", max_tokens=40, temperature=0, speculative=i != 1)
        assert r.status_code == 200, r.text


def cancel_a_stream(base: str) -> None:
    """A long stream whose client leaves after the first chunk: the server counts it as cancelled."""
    body = {"model": "2l", "prompt": "ROMEO:", "max_tokens": 100_000, "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        next(r.iter_lines())


# The server's limits: drive_load's 4 concurrent requests never fill the queue, crowd_out does.
BATCH, QUEUE = 2, 4


def crowd_out(base: str) -> None:
    """Fill the batch (BATCH long streams) and the queue (QUEUE more), so the next request is refused with 429; then
    hang up on all of them (cancellations). A stream's headers come with its first token, so the queued ones are
    sent from threads."""
    body = {"model": "2l", "prompt": "ROMEO:", "max_tokens": 100_000, "stream": True}
    labels = {"model": MODEL, "layers": "2"}
    with ThreadPoolExecutor(QUEUE) as pool, contextlib.ExitStack() as streams:  # streams close first
        for _ in range(BATCH):
            assert streams.enter_context(httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=30))
        queued = [pool.submit(cancel_a_stream, base) for _ in range(QUEUE)]
        wait_for(lambda: metric(httpx.get(f"{base}/metrics").text, "gptzoo_requests_waiting", **labels) == QUEUE,
                 "the queued requests")
        r = post(base, model="2l", prompt="x")
        assert r.status_code == 429 and r.headers["retry-after"], r.text
    for f in queued:  # each got a slot as others left, and hung up too
        f.result(timeout=30)


def reload_model(base: str) -> None:
    """Unload the model and load it again (the live zoo's admin API): one more load for the loads panel."""
    assert httpx.post(f"{base}/admin/models/{MODEL}/unload", timeout=30).status_code == 200
    assert httpx.post(f"{base}/admin/models/{MODEL}/load", timeout=30).status_code in (200, 202)
    wait_for(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, "the model loaded again")


def test_every_panel_expr_returns_series_from_a_real_prometheus(prometheus, tmp_path, drafted_store):
    store = tmp_path / "store"
    shutil.copytree(drafted_store, store)
    flags = ("--max-tokens", 100_000, "--max-batch-size", BATCH, "--max-queue", QUEUE, "--models", "2l",
             "--draft", "2l=1l")
    with live_server(tmp_path, store, *flags) as (base, _):
        port = free_port()
        prom = f"http://127.0.0.1:{port}"
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "gptzoo", "static_configs": [{"targets": [base.split("//")[1]]}]}]}))
        log = tmp_path / "prometheus.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            def scrapes() -> float:
                result = query(prom, 'count_over_time(up{job="gptzoo"}[5m])')
                return float(result[0]["value"][1]) if result else 0.0

            wait_for(lambda: httpx.get(f"{prom}/-/ready", timeout=2).status_code == 200, "prometheus ready", proc=proc)
            wait_for(lambda: query(prom, 'up{job="gptzoo"} == 1'), "the first scrape", proc=proc)

            # The load in two halves with scrapes between them, so the rates see counters rise.
            tokens = drive_load(base, 15)
            drive_alone(base, 3)
            seen = scrapes()
            wait_for(lambda: scrapes() >= seen + 2, "two scrapes between the halves", proc=proc)
            tokens += drive_load(base, 15)
            drive_alone(base, 3)
            assert post(base, model="no-such-model", prompt="x").status_code == 404
            assert post(base, model="2l", prompt="x", max_tokens=0).status_code == 400
            crowd_out(base)
            wait_for(lambda: metric(httpx.get(f"{base}/metrics").text, "gptzoo_requests_cancelled_total",
                                    model=MODEL, layers="2") == BATCH + QUEUE, "the cancellations")
            reload_model(base)
            seen = scrapes()
            wait_for(lambda: scrapes() >= seen + 3, "three scrapes after the load", proc=proc)

            empty = []
            for where, expr in panel_exprs(dashboard()):
                if not query(prom, substitute(expr)):
                    empty.append(f"{where}: {substitute(expr)}")
            assert not empty, "panels with no series:\n" + "\n".join(empty)

            # A few panels read back what the load did.
            exprs = dict(panel_exprs(dashboard()))
            outcomes = {s["metric"]["outcome"] for s in query(prom, substitute(
                exprs["Completion requests/s by outcome [A]"]))}
            assert {"length", "model_not_found", "invalid_request", "cancelled", "overloaded"} <= outcomes, outcomes
            refused = {s["metric"]["reason"]: float(s["value"][1]) for s in query(prom, of_model(
                exprs["Refused and cancelled requests/s [A]"]))}
            assert refused["overloaded"] > 0 and refused["queue_timeout"] == 0, refused
            [cancelled] = query(prom, of_model(exprs["Refused and cancelled requests/s [B]"]))
            assert float(cancelled["value"][1]) > 0
            reasons = {s["metric"]["reason"] for s in query(prom, substitute(
                exprs["Route decisions/s by reason [A]"]))}
            assert {"named", "best-fit"} <= reasons, reasons
            results = {s["metric"]["result"] for s in query(prom, substitute(
                exprs["Goodput: budgeted requests within and over budget per second [A]"]))}
            assert results == {"within", "over"}, results
            [point] = query(prom, of_model(exprs["Quality vs latency frontier: validation loss against p50 "
                                                 "ms/token [B]"]))
            assert 0 < float(point["value"][1]) < 1e3  # ms per token of the tiny model
            rates = {s["metric"]["model"]: float(s["value"][1]) for s in query(prom, substitute(exprs["Tokens/s [A]"]))}
            assert rates[MODEL] > 0 and rates.get(DRAFT, 0) == 0, rates  # the draft is not served, only drafts
            # the acceptance per pair, over a range that holds the drafting however slow the machine is today
            [acceptance] = query(prom, substitute(exprs["Speculative acceptance [A]"]).replace("[30s]", "[5m]"))
            assert acceptance["metric"] == {"model": MODEL, "draft": DRAFT}, acceptance
            assert 0 <= float(acceptance["value"][1]) <= 1, acceptance
            [proposed] = query(prom, substitute(exprs["Drafted tokens/s [A]"]).replace("[30s]", "[5m]"))
            [kept] = query(prom, substitute(exprs["Drafted tokens/s [B]"]).replace("[30s]", "[5m]"))
            assert float(proposed["value"][1]) > 0 and float(kept["value"][1]) <= float(proposed["value"][1])
            [loss] = query(prom, of_model(exprs["Validation loss vs p95 latency, per depth [A]"]))
            card_loss = httpx.get(f"{base}/v1/models/{MODEL}").json()["val_loss"]
            assert loss["metric"]["layers"] == "2" and math.isclose(float(loss["value"][1]), card_loss)
            [p95] = query(prom, of_model(exprs["Validation loss vs p95 latency, per depth [B]"]))
            assert 0 < float(p95["value"][1]) < 30
            generated = query(prom, f'sum(gptzoo_generation_tokens_total{{model="{MODEL}"}})')
            assert float(generated[0]["value"][1]) >= tokens
            # the reload's load, over a range that holds it however slow the machine is today
            loads = {s["metric"]["outcome"]: float(s["value"][1])
                     for s in query(prom, of_model(exprs["Model loads [A]"]).replace("[30s]", "[5m]"))}
            assert loads["loaded"] > 0 and loads["failed"] == 0, loads
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    assert "level=error" not in log.read_text(), log.read_text()
