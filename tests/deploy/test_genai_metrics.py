"""The OpenTelemetry GenAI series (gptzoo.server.genai) as a real Prometheus stores them from a real `gptzoo serve`:
every one present with the conventions' labels and bucket boundaries (extended below, never changed), and equal to
the gptzoo_* series measured on the same requests (one clock); a cancelled request counts under its error_type;
promtool finds nothing to say about the scrape."""

from __future__ import annotations

import contextlib
import math
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from gptzoo.server import buckets
from tests.deploy.conftest import run
from tests.deploy.test_live_stack import cancel_a_stream, post, query, wait_for
from tests.server.conftest import MODEL, free_port, live_server

pytestmark = pytest.mark.slow

FAMILY = "shakespeare-char"
# the conventions' boundaries (semantic-conventions, docs/gen-ai/gen-ai-metrics.md)
CONVENTIONS = {
    "gen_ai_server_request_duration_seconds": [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                                               20.48, 40.96, 81.92],
    "gen_ai_server_time_to_first_token_seconds": [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                                  1.0, 2.5, 5.0, 7.5, 10.0],
    "gen_ai_server_time_per_output_token_seconds": [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
                                                    1.0, 2.5],
    "gen_ai_client_token_usage": [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
                                  67108864],
}
OURS = {"gen_ai_server_request_duration_seconds": buckets.GENAI_REQUEST_SECONDS,
        "gen_ai_server_time_to_first_token_seconds": buckets.GENAI_TTFT_SECONDS,
        "gen_ai_server_time_per_output_token_seconds": buckets.GENAI_TPOT_SECONDS,
        "gen_ai_client_token_usage": buckets.GENAI_TOKENS}
# (GenAI expr, gptzoo expr) pairs that must agree: sums to float rounding (added up in another order), counts exactly
SAME = [
    ('sum(gen_ai_server_request_duration_seconds_sum{error_type=""})', "sum(gptzoo_e2e_request_latency_seconds_sum)"),
    ('sum(gen_ai_server_request_duration_seconds_count{error_type=""})',
     "sum(gptzoo_e2e_request_latency_seconds_count)"),
    ("sum(gen_ai_server_time_to_first_token_seconds_sum)", "sum(gptzoo_time_to_first_token_seconds_sum)"),
    ("sum(gen_ai_server_time_to_first_token_seconds_count)", "sum(gptzoo_time_to_first_token_seconds_count)"),
    ("sum(gen_ai_server_time_per_output_token_seconds_sum)", "sum(gptzoo_time_per_output_token_seconds_sum)"),
    ("sum(gen_ai_server_time_per_output_token_seconds_count)", "sum(gptzoo_time_per_output_token_seconds_count)"),
    ('sum(gen_ai_client_token_usage_sum{gen_ai_token_type="input"})', "sum(gptzoo_prompt_tokens_total)"),
    ('sum(gen_ai_client_token_usage_sum{gen_ai_token_type="output"})', "sum(gptzoo_generation_tokens_total)"),
]
REQUESTS = [  # (model, max_tokens, stream)
    ("2l", 12, False), ("2l", 20, True), (MODEL, 1, False), ("auto", 9, False), ("auto", 15, True),
    (FAMILY, 7, False), ("2l", 30, False), ("auto", 2, False),
]


def value(prom: str, expr: str) -> float:
    [series] = query(prom, expr)
    return float(series["value"][1])


@contextlib.contextmanager
def prometheus_scraping(prometheus: str, tmp_path, target: str):
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [
        {"job_name": "gptzoo", "static_configs": [{"targets": [target]}]}]}))
    proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prom = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{prom}/-/ready", timeout=2).status_code == 200, "prometheus ready", proc=proc)
        yield prom, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_genai_series_equal_the_gptzoo_series_in_a_real_prometheus(prometheus, promtool, tmp_path, exported_store):
    with live_server(tmp_path, exported_store, "--max-tokens", 100_000) as (base, _), \
            prometheus_scraping(prometheus, tmp_path, base.split("//")[1]) as (prom, proc):
        def one(req) -> httpx.Response:
            model, max_tokens, stream = req
            return post(base, model=model, prompt="ROMEO:", max_tokens=max_tokens, stream=stream, seed=max_tokens)

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(one, REQUESTS))
        assert [r.status_code for r in answers] == [200] * len(REQUESTS), [r.text for r in answers]
        n = len(REQUESTS)
        scraped = f"sum(gen_ai_server_request_duration_seconds_count) == {n} and sum(gptzoo_completion_requests_total)"
        wait_for(lambda: query(prom, f"{scraped} == {n}"), "the requests scraped", proc=proc)

        for genai_expr, gptzoo_expr in SAME:
            ours, theirs = value(prom, genai_expr), value(prom, gptzoo_expr)
            assert theirs > 0 and math.isclose(ours, theirs, rel_tol=1e-9), (genai_expr, ours, theirs)
        assert value(prom, "sum(gen_ai_server_time_per_output_token_seconds_count)") == n - 1  # one had 1 token
        plain = sum(r.json()["usage"]["completion_tokens"] for r in answers if not r.headers["content-type"]
                    .startswith("text/event-stream"))
        assert plain + 20 + 15 == value(prom, 'sum(gen_ai_client_token_usage_sum{gen_ai_token_type="output"})')

        # the conventions' labels: one operation and provider, the name each request routed by, the variant it ran on
        groups = query(prom, "count by (gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, "
                             "gen_ai_response_model) (gen_ai_server_request_duration_seconds_count)")
        assert {(g["metric"]["gen_ai_operation_name"], g["metric"]["gen_ai_provider_name"],
                 g["metric"]["gen_ai_request_model"], g["metric"]["gen_ai_response_model"]) for g in groups} == {
            ("text_completion", "gptzoo", name, MODEL) for name in (MODEL, "auto", FAMILY)}
        assert value(prom, 'sum(gen_ai_server_request_duration_seconds_count{gen_ai_request_model="auto"})') == 3
        types = query(prom, "count by (gen_ai_token_type) (gen_ai_client_token_usage_count)")
        assert {t["metric"]["gen_ai_token_type"] for t in types} == {"input", "output"}

        # the buckets: the conventions' boundaries all there, ours only below their first
        for name, conventions in CONVENTIONS.items():
            les = {float(s["metric"]["le"]) for s in query(prom, f"count by (le) ({name}_bucket)")}
            assert les == {*OURS[name], math.inf}, name
            assert set(conventions) <= les and all(b < conventions[0] for b in les - set(conventions) - {math.inf})

        # a client that leaves: a duration under error_type="cancelled", nothing in the success-only series
        before = value(prom, "sum(gen_ai_server_time_to_first_token_seconds_count)")
        cancel_a_stream(base)
        wait_for(lambda: query(prom, 'sum(gen_ai_server_request_duration_seconds_count{error_type="cancelled"}) == 1'
                                     " and sum(gptzoo_requests_cancelled_total) == 1"), "the cancellation", proc=proc)
        assert value(prom, "sum(gen_ai_server_time_to_first_token_seconds_count)") == before

        scrape = httpx.get(f"{base}/metrics", timeout=10).text
        r = run(promtool, "check", "metrics", stdin=scrape)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
