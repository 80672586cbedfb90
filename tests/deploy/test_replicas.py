"""Two `gptzoo serve` replicas over one store behind a real load balancer (Debian's haproxy), scraped by a real
Prometheus: requests spread, one reload per replica brings a new variant to both, a replica killed mid-stream fails
only its own streams while the survivor serves on, and fleet sums equal the instances' sum."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from tests.deploy.conftest import dashboard, panel_exprs, substitute
from tests.deploy.test_live_stack import query, wait_for
from tests.server.conftest import MODEL, free_port, metric, server_process

pytestmark = pytest.mark.slow
NEW = "shakespeare-char-1l"


@pytest.fixture(scope="module")
def haproxy() -> str:
    path = shutil.which("haproxy")
    if path is None:
        pytest.skip("haproxy is not installed (Debian: apt-get install haproxy; .ci/run does)")
    return path


HAPROXY_CFG = """
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch 1
    # connections refused by a dead replica are retried on another
    retry-on conn-failure empty-response response-timeout
frontend fleet
    bind 127.0.0.1:{port}
    # a test may pin a request to one replica; the others are balanced round-robin
    use_backend pin_a if {{ req.hdr(x-pin) -m str a }}
    use_backend pin_b if {{ req.hdr(x-pin) -m str b }}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-response set-header x-replica %s
    server a {a} check inter 300ms fall 1 rise 1
    server b {b} check inter 300ms fall 1 rise 1
backend pin_a
    server a {a}
backend pin_b
    server b {b}
"""


def served(base: str, model: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(metric(text, "gptzoo_completion_requests_total", model=model, outcome=o) for o in ("length", "stop"))


def complete(lb: str, model: str, **extra) -> httpx.Response:
    return httpx.post(f"{lb}/v1/completions", json={"model": model, "prompt": "ROMEO:", "max_tokens": 8} | extra,
                      timeout=30)


def read_stream(lines_of) -> list[str]:
    """The stream's data lines as far as they came (a cut connection ends them); `lines_of` is a response or the
    line iterator a reader already started (a response's lines can be iterated once)."""
    lines = []
    with contextlib.suppress(httpx.TransportError):
        lines += [ln for ln in (lines_of.iter_lines() if isinstance(lines_of, httpx.Response) else lines_of)
                  if ln.startswith("data: ")]
    return lines


def test_two_replicas_behind_haproxy(haproxy, prometheus, tmp_path, drafted_store):
    store = tmp_path / "store"
    shutil.copytree(drafted_store, store, ignore=shutil.ignore_patterns(NEW))
    flags = ("--max-tokens", 100_000)
    with contextlib.ExitStack() as stack:
        (proc_a, a, _), (proc_b, b, _) = (stack.enter_context(server_process(tmp_path, store, *flags))
                                          for _ in range(2))
        port = free_port()
        lb = f"http://127.0.0.1:{port}"
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=port, a=a.split("//")[1], b=b.split("//")[1]))
        ha = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(ha.kill)
        wait_for(lambda: httpx.get(f"{lb}/readyz", timeout=2).status_code == 200, "haproxy up", proc=ha)

        # Prometheus scrapes each replica: one `instance` each
        pport = free_port()
        prom = f"http://127.0.0.1:{pport}"
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "gptzoo", "static_configs": [
                {"targets": [a.split("//")[1], b.split("//")[1]]}]}]}))
        pp = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{pport}",
                               "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(pp.terminate)

        # requests spread over both replicas
        n = 12
        with ThreadPoolExecutor(4) as pool:
            rs = list(pool.map(lambda i: complete(lb, MODEL, seed=i), range(n)))
        assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200]
        on_a, on_b = served(a, MODEL), served(b, MODEL)
        assert on_a > 0 and on_b > 0 and on_a + on_b == n
        assert {r.headers["x-replica"] for r in rs} == {"a", "b"}

        # fleet sums in Prometheus equal the instances' sum
        def scraped():
            return {s["metric"]["instance"]: float(s["value"][1]) for s in query(prom, (
                f'sum by (instance) (gptzoo_completion_requests_total{{model="{MODEL}"}})'))}
        wait_for(lambda: scraped() == {a.split("//")[1]: on_a, b.split("//")[1]: on_b}, "both instances scraped",
                 proc=pp)
        [fleet] = query(prom, f'sum by (model) (gptzoo_completion_requests_total{{model="{MODEL}"}})')
        assert float(fleet["value"][1]) == n
        # so do the GenAI series (recorded before each answer left, so in the same scrapes)
        per_replica = {s["metric"]["instance"]: float(s["value"][1]) for s in query(prom, (
            f'sum by (instance) (gen_ai_server_request_duration_seconds_count{{gen_ai_response_model="{MODEL}"}})'))}
        assert per_replica == {a.split("//")[1]: on_a, b.split("//")[1]: on_b}, per_replica
        [fleet] = query(prom, "sum by (gen_ai_response_model) (gen_ai_server_request_duration_seconds_count"
                              f'{{gen_ai_response_model="{MODEL}"}})')
        assert float(fleet["value"][1]) == n
        # every dashboard panel aggregates across instances: no result keeps an `instance` label, except the
        # panels that show the spread per instance
        per_instance = [where for where, expr in panel_exprs(dashboard()) if "per instance" not in where
                        for series in query(prom, substitute(expr)) if "instance" in series["metric"]]
        assert not per_instance, per_instance

        # a variant added to the store answers on every replica after one reload each
        shutil.copytree(drafted_store / NEW, store / NEW)
        for base in (a, b):
            report = httpx.post(f"{base}/admin/reload", timeout=30)
            assert report.status_code == 200, report.text
        for base in (a, b):
            wait_for(lambda base=base: any(m["id"] == NEW and m["ready"]
                                           for m in httpx.get(f"{base}/readyz", timeout=5).json()["models"]),
                     f"{NEW} ready on {base}")
        rs = [complete(lb, NEW) for _ in range(4)]
        assert all(r.status_code == 200 for r in rs) and served(a, NEW) > 0 and served(b, NEW) > 0

        # replica a killed mid-stream: its stream fails, b's stream and every later request succeed
        body = {"model": MODEL, "prompt": "ROMEO:", "stream": True}
        client = stack.enter_context(httpx.Client(timeout=60))
        doomed = stack.enter_context(client.stream("POST", f"{lb}/v1/completions", headers={"x-pin": "a"},
                                                   json=body | {"max_tokens": 100_000}))
        kept = stack.enter_context(client.stream("POST", f"{lb}/v1/completions", headers={"x-pin": "b"},
                                                 json=body | {"max_tokens": 300}))
        assert doomed.status_code == kept.status_code == 200
        doomed_lines = doomed.iter_lines()
        first = next(doomed_lines)
        assert first.startswith("data: ")
        proc_a.send_signal(signal.SIGKILL)
        proc_a.wait(timeout=10)
        after = [complete(lb, MODEL, seed=i) for i in range(8)]
        assert [r.status_code for r in after] == [200] * 8, [r.text for r in after]
        assert {r.headers["x-replica"] for r in after} == {"b"}
        kept_lines = read_stream(kept)
        assert kept_lines[-1] == "data: [DONE]"
        assert json.loads(kept_lines[-2][6:])["choices"][0]["finish_reason"] == "length"
        assert "data: [DONE]" not in read_stream(doomed_lines)
        assert served(b, MODEL) == on_b + 1 + 8  # b's own stream and every later request
