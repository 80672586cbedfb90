"""A minimal OTLP/HTTP trace receiver on loopback: what the server's traces go to in the tests and the tracing
benchmark (benchmarks/serving_ab.py --traced), with no collector to install. It accepts `POST /v1/traces` in the
protobuf encoding (the SDK's OTLPSpanExporter default), answers as a collector does, and keeps the spans it got
(decoded with opentelemetry-proto, the `otel` extra), or only counts them (`keep=False`, for long runs).

    with OtlpSink() as sink:   # sink.endpoint -> OTEL_EXPORTER_OTLP_ENDPOINT
        ...
        sink.spans             # [Span(name, trace_id, span_id, parent_id, kind, attributes, start_ns, end_ns)]
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str
    parent_id: str  # "" for a root span
    kind: int  # OTLP's SpanKind: 2 is SERVER
    attributes: dict
    start_ns: int
    end_ns: int


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class OtlpSink:
    """Starts on `__enter__` (a free loopback port), stops on `__exit__`."""

    def __init__(self, keep: bool = True):
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self._pb, self.keep = trace_service_pb2, keep
        self.spans: list[Span] = []
        self.count = 0  # spans received (kept or not)
        self.requests = 0  # export requests received
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                sink._receive(body)
                reply = sink._pb.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:  # quiet: the benchmark's output is its table
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _receive(self, body: bytes) -> None:
        req = self._pb.ExportTraceServiceRequest.FromString(body)
        got = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        spans = [Span(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.kind,
                      {a.key: _value(a.value) for a in s.attributes}, s.start_time_unix_nano, s.end_time_unix_nano)
                 for s in got] if self.keep else []
        with self._lock:
            self.requests += 1
            self.count += len(got)
            self.spans.extend(spans)

    def __enter__(self) -> OtlpSink:
        threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
