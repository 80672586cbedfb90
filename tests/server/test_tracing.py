"""Request traces (gptzoo.server.tracing): a span per completion request with the GenAI attributes and its phases as
child spans, the trace id in the `x-trace-id` header; in-process with the SDK's in-memory exporter, and end to end:
`gptzoo serve` exporting over OTLP/HTTP to a receiver on loopback, with the trace id in the access log. Without an
endpoint nothing is traced and no header is sent."""

from __future__ import annotations

import time

import httpx
import pytest
from litestar.testing import TestClient

from gptzoo.server.app import create_app
from gptzoo.server.settings import Settings
from tests.server.conftest import MODEL, TEST_HOST, live_server

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

PHASES = {"route", "queue", "prefill", "decode"}
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def traced(exported_store):
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings.build(store=str(exported_store), max_tokens=64, threads=1, allowed_hosts=[TEST_HOST])
    with TestClient(app=create_app(settings, tracer_provider=provider)) as client:
        yield client, exporter


def trace_of(exporter: InMemorySpanExporter, trace_id: str) -> tuple[object, dict[str, object]]:
    """The request's root span and its children by name."""
    spans = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    [root] = [s for s in spans if s.parent is None or s.parent.is_remote]
    children = {s.name: s for s in spans if s is not root}
    assert all(s.parent.span_id == root.context.span_id for s in children.values())
    return root, children


def test_a_completion_is_one_span_with_its_phases_and_genai_attributes(traced):
    client, exporter = traced
    r = client.post("/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "max_tokens": 7, "seed": 3,
                                             "temperature": 0.5})
    assert r.status_code == 200, r.text
    root, children = trace_of(exporter, r.headers["x-trace-id"])
    assert root.name == f"text_completion {MODEL}" and root.kind.name == "SERVER"
    a = root.attributes
    assert a["gen_ai.operation.name"] == "text_completion" and a["gen_ai.provider.name"] == "gptzoo"
    assert a["gen_ai.request.model"] == MODEL and a["gen_ai.response.model"] == MODEL  # "2l" is MODEL's alias
    assert a["gen_ai.response.id"] == r.json()["id"]
    assert a["gen_ai.request.max_tokens"] == 7 and a["gen_ai.request.seed"] == 3
    assert a["gen_ai.request.temperature"] == 0.5
    usage = r.json()["usage"]
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"] == 6
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert tuple(a["gen_ai.response.finish_reasons"]) == (r.json()["choices"][0]["finish_reason"],)
    assert "error.type" not in a and a["http.response.status_code"] == 200
    assert set(children) == PHASES  # not streamed: no stream span
    order = [children[n] for n in ("route", "queue", "prefill", "decode")]
    assert all(x.end_time <= y.start_time + 1000 for x, y in zip(order, order[1:], strict=False))  # in sequence
    assert root.start_time <= order[0].start_time and order[-1].end_time <= root.end_time


def test_a_routed_stream_has_a_stream_span_and_the_route_names_its_variant(traced):
    client, exporter = traced
    r = client.post("/v1/completions", json={"model": "auto", "prompt": "A", "max_tokens": 5, "stream": True})
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\r\n\r\n"), r.text
    root, children = trace_of(exporter, r.headers["x-trace-id"])
    assert set(children) == PHASES | {"stream"}
    assert root.attributes["gen_ai.request.model"] == "auto"
    assert root.attributes["gen_ai.response.model"] == r.headers["x-gptzoo-model"] == MODEL
    assert root.attributes["gptzoo.route"] == r.headers["x-gptzoo-route"]


def test_errors_are_traced_with_their_type_and_a_callers_trace_is_joined(traced):
    client, exporter = traced
    parent = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
    r = client.post("/v1/completions", json={"model": "nope", "prompt": "x"}, headers={"traceparent": parent})
    assert r.status_code == 404
    assert r.headers["x-trace-id"] == CALLER_TRACE  # the caller's trace goes on
    root, children = trace_of(exporter, CALLER_TRACE)
    assert root.parent.span_id == 0x00F067AA0BA902B7
    assert root.attributes["error.type"] == "model_not_found" and root.status.status_code.name == "ERROR"
    assert children == {}  # refused before it had a variant
    r = client.post("/v1/completions", json={"model": "2l", "prompt": "x", "max_tokens": 0})
    assert r.status_code == 400
    root, _ = trace_of(exporter, r.headers["x-trace-id"])
    assert root.attributes["error.type"] == "invalid_request"


def test_other_routes_and_an_untraced_server_send_no_trace_header(traced, client):
    traced_client, exporter = traced
    assert "x-trace-id" not in traced_client.get("/healthz").headers
    assert exporter.get_finished_spans() == ()
    r = client.post("/v1/completions", json={"model": "2l", "prompt": "A", "max_tokens": 2})
    assert r.status_code == 200 and "x-trace-id" not in r.headers  # no OTLP endpoint: no tracing at all


@pytest.mark.slow
def test_gptzoo_serve_exports_over_otlp_and_logs_the_trace_id(tmp_path, exported_store):
    from gptzoo.measure.otlp_sink import OtlpSink

    with OtlpSink() as sink:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
               "OTEL_SERVICE_NAME": "gptzoo-test"}
        with live_server(tmp_path, exported_store, env=env) as (base, log):
            r = httpx.post(f"{base}/v1/completions", json={"model": "2l", "prompt": "A", "max_tokens": 4,
                                                           "stream": True}, timeout=30)
            assert r.status_code == 200
            trace_id = r.headers["x-trace-id"]
            deadline = time.monotonic() + 30
            while not [s for s in sink.spans if s.trace_id == trace_id and s.name == "stream"]:
                assert time.monotonic() < deadline, "the spans did not arrive"
                time.sleep(0.1)
        spans = {s.name: s for s in sink.spans if s.trace_id == trace_id}
        assert set(spans) == PHASES | {"stream", f"text_completion {MODEL}"}
        root = spans[f"text_completion {MODEL}"]
        assert root.kind == 2 and root.parent_id == ""
        assert root.attributes["gen_ai.response.model"] == MODEL
        assert root.attributes["gen_ai.usage.output_tokens"] == 4
        assert all(s.parent_id == root.span_id for n, s in spans.items() if n != root.name)
    lines = [line for line in log.read_text().splitlines() if "POST /v1/completions" in line]
    assert len(lines) == 1 and lines[0].endswith(f"trace_id={trace_id}"), lines
