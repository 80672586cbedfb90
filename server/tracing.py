"""Traces of completion requests with the OpenTelemetry SDK, exported over OTLP/HTTP when the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the SDK's other OTEL_* variables
(service name, headers, sampler, batch sizes) apply as usual. Needs the `otel` extra.

Unset, nothing is traced and nothing runs: the middleware below is not installed and the SDK is not imported, so the
hot path is what it was (docs/benchmarks.md, "Tracing"). Set, each POST /v1/completions gets one SERVER span,
`text_completion {model}` with the GenAI attributes (gen_ai.operation.name, gen_ai.provider.name,
gen_ai.request.model, gen_ai.response.model, gen_ai.response.id, gen_ai.request.*, gen_ai.usage.*,
gen_ai.response.finish_reasons, error.type) and child spans for its phases: `route` (arrival to queued: the body,
tokenizing, choosing the variant), `queue` (waiting for a batch slot), `prefill` (slot to first token), `decode`
(first token to last) and, for a stream, `stream` (first token to the response's end). The phases are the times the
worker already keeps for the metrics (gptzoo.server.job), turned into spans once the request is over, so tracing adds
no work to the model's thread. A `traceparent` header from the caller is honoured (the span joins its trace), and the
trace id goes back in the `x-trace-id` response header and into the access log (`TraceIdFilter`)."""

from __future__ import annotations

import logging
import os
import time
from contextvars import ContextVar

from gptzoo.server import genai
from gptzoo.server.outcomes import COMPLETIONS

log = logging.getLogger("gptzoo.server")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACE_HEADER = "x-trace-id"
FINISH_REASONS = ("stop", "length")
# the trace id of the request being handled, for the access log line uvicorn writes while sending its response
TRACE_ID: ContextVar[str] = ContextVar("gptzoo_trace_id", default="-")


def enabled() -> bool:
    return any(os.environ.get(v) for v in ENDPOINT_VARS)


def provider_from_env():
    """A TracerProvider exporting over OTLP/HTTP, or None when no endpoint is set (or the SDK is not installed:
    then a warning says so, and the server serves untraced)."""
    if not enabled():
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed "
                    "(pip install 'gptzoo[otel]'): serving without traces")
        return None
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; gptzoo is only the default
    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "gptzoo"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # exports off the request's path
    return provider


class TraceIdFilter(logging.Filter):
    """Gives uvicorn's access log records the request's trace id (`%(trace_id)s`; "-" when untraced)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = TRACE_ID.get()
        return True


class TraceMiddleware:
    """ASGI middleware: one span per completion request (other routes pass through untouched)."""

    def __init__(self, app, provider):
        from opentelemetry import propagate, trace

        self.app, self._trace, self._propagate = app, trace, propagate
        self.tracer = provider.get_tracer("gptzoo.server")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != COMPLETIONS:
            await self.app(scope, receive, send)
            return
        trace = self._trace
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        t0, wall0 = time.perf_counter(), time.time_ns()
        span = self.tracer.start_span("text_completion", context=self._propagate.extract(carrier),
                                      kind=trace.SpanKind.SERVER, start_time=wall0,
                                      attributes={"gen_ai.operation.name": genai.OPERATION,
                                                  "gen_ai.provider.name": genai.PROVIDER})
        trace_id = trace.format_trace_id(span.get_span_context().trace_id)
        header = (TRACE_HEADER.encode(), trace_id.encode())

        async def traced_send(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
                span.set_attribute("http.response.status_code", message["status"])
            await send(message)

        token = TRACE_ID.set(trace_id)
        try:
            with trace.use_span(span, end_on_exit=False):
                await self.app(scope, receive, traced_send)
        finally:
            TRACE_ID.reset(token)
            end = time.perf_counter()
            self._describe(span, scope.get("state") or {}, t0, wall0, end)
            span.end(end_time=wall0 + int((end - t0) * 1e9))

    def _describe(self, span, state: dict, t0: float, wall0: int, end: float) -> None:
        """The request's GenAI attributes and its phases as child spans, from what the request left in its scope."""
        if not span.is_recording():  # sampled out (OTEL_TRACES_SAMPLER): nothing more to build
            return
        outcome, p = state.get("gptzoo_outcome"), state.get("gptzoo_prepared")
        if outcome in FINISH_REASONS:
            span.set_attribute("gen_ai.response.finish_reasons", [outcome])
        elif outcome is not None:
            span.set_attribute("error.type", outcome)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, outcome))
        if p is None:  # refused before a variant was chosen
            return
        job, params = p.job, p.job.params
        span.update_name(f"{genai.OPERATION} {job.requested or p.worker.id}")
        attrs = {"gen_ai.request.model": job.requested or p.worker.id, "gen_ai.response.model": p.worker.id,
                 "gen_ai.response.id": p.id, "gen_ai.request.max_tokens": params.max_tokens,
                 "gen_ai.request.temperature": params.temperature, "gen_ai.usage.input_tokens": len(job.prompt_ids),
                 "gen_ai.usage.output_tokens": job.seen, "gptzoo.route": p.route, "gptzoo.stream": job.stream}
        for name, value in (("top_k", params.top_k), ("top_p", params.top_p), ("seed", params.seed)):
            if value is not None:
                attrs[f"gen_ai.request.{name}"] = value
        span.set_attributes(attrs)

        def ns(t: float) -> int:
            return wall0 + int((t - t0) * 1e9)

        context = self._trace.set_span_in_context(span)
        phases = [("route", t0, job.arrival), ("queue", job.arrival, job.admitted_at or end)]
        if job.admitted_at:
            phases.append(("prefill", job.admitted_at, job.first_token_at or end))
        if job.first_token_at:
            phases.append(("decode", job.first_token_at, job.last_token_at))
            if job.stream:
                phases.append(("stream", job.first_token_at, end))
        for name, start, stop in phases:
            self.tracer.start_span(name, context=context, start_time=ns(start)).end(end_time=ns(max(stop, start)))
