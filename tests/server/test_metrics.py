"""/metrics: the service's own metrics are present, labelled by model and depth, and move with traffic."""

import json
import time

from gptzoo.server import buckets
from tests.server.conftest import MODEL, metric

L = {"model": MODEL, "layers": "2"}


def scrape(client) -> str:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


def test_model_gauges_come_from_the_card(client, exported_store):
    card = json.loads((exported_store / MODEL / "card.json").read_text())
    text = scrape(client)
    assert metric(text, "gptzoo_model_validation_loss", **L) == card["val_loss"]
    assert metric(text, "gptzoo_model_ready", **L) == 1
    assert metric(text, "gptzoo_model_info", **L, provider="CPUExecutionProvider", params=str(card["params"]),
                  exporter=card["onnx"]["exporter"], quantization="none", arch="gpt2") == 1


def test_request_metrics_move_after_requests(client):
    before = scrape(client)
    body = {"model": "2l", "prompt": "ROMEO:", "max_tokens": 10}
    assert client.post("/v1/completions", json=body).status_code == 200
    assert client.post("/v1/completions", json={**body, "stream": True}).status_code == 200
    assert client.post("/v1/completions", json={**body, "prompt": "é"}).status_code == 400
    # The worker sets the running gauge after the step that sent the last answer on its way, so the test may see
    # that answer first; wait (bounded) for the gauge. Counters and histograms move before the answer is sent.
    for _ in range(500):
        after = scrape(client)
        if metric(after, "gptzoo_requests_running", **L) == 0:
            break
        time.sleep(0.01)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("gptzoo_prompt_tokens_total", **L) == 12
    assert delta("gptzoo_generation_tokens_total", **L) == 20
    assert delta("gptzoo_completion_requests_total", **L, outcome="length") == 2
    assert delta("gptzoo_completion_requests_total", **L, outcome="unknown_characters") == 1
    assert delta("gptzoo_time_to_first_token_seconds_count", **L) == 2
    assert delta("gptzoo_inter_token_latency_seconds_count", **L) == 18
    assert delta("gptzoo_e2e_request_latency_seconds_count", **L) == 2
    assert delta("gptzoo_request_queue_time_seconds_count", **L) == 2
    # 9 decode steps per request (the first token comes from the prefill), one row each
    assert delta("gptzoo_batch_size_count", **L) == 18 and delta("gptzoo_batch_size_sum", **L) == 18
    assert delta("gptzoo_batch_size_bucket", **L, le="1.0") == 18
    # the engine's own calls: one prefill of 6 prompt tokens and 9 decode steps per request, each timed
    assert delta("gptzoo_engine_step_seconds_count", **L, phase="prefill") == 2
    assert delta("gptzoo_engine_step_seconds_count", **L, phase="decode") == 18
    assert delta("gptzoo_engine_step_seconds_sum", **L, phase="decode") > 0
    assert delta("gptzoo_prefill_tokens_per_step_count", **L) == 2
    assert delta("gptzoo_prefill_tokens_per_step_sum", **L) == 12
    assert delta("gptzoo_inter_token_latency_seconds_sum", **L) > 0
    assert metric(after, "gptzoo_requests_running", **L) == 0 and metric(after, "gptzoo_requests_waiting", **L) == 0
    http = {"method": "POST", "path": "/v1/completions", "app_name": "gptzoo"}
    assert delta("gptzoo_http_requests_total", **http, status_code="200") == 2
    assert delta("gptzoo_http_requests_total", **http, status_code="400") == 1


def test_refusal_and_cancellation_counters_exist_from_the_start(client):
    text = scrape(client)
    for reason in ("overloaded", "model_not_ready", "queue_timeout", "shutting_down"):
        assert f'gptzoo_requests_refused_total{{layers="2",model="{MODEL}",reason="{reason}"}}' in text
    assert f'gptzoo_requests_cancelled_total{{layers="2",model="{MODEL}"}}' in text


def test_unknown_model_names_never_become_labels(client):
    client.post("/v1/completions", json={"model": "made-up-model", "prompt": "A"})
    text = scrape(client)
    assert "made-up-model" not in text
    assert metric(text, "gptzoo_completion_requests_total", model="", layers="", outcome="model_not_found") >= 1


def test_token_buckets_resolve_sub_millisecond_times(client):
    text = scrape(client)
    assert min(buckets.INTER_TOKEN_SECONDS) < 1e-4 and min(buckets.TTFT_SECONDS) <= 1e-3
    assert 'gptzoo_inter_token_latency_seconds_bucket{layers="2",le="5e-05",model="shakespeare-char-2l"}' in text
