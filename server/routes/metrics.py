"""GET /metrics: the Prometheus scrape, open without an API key, rendered in a worker thread.

Serialising every series is CPU work that grows with the series (issue 22 measured 3-4.4 s for 14 MB of them): on
the event loop it held up every other request, /healthz included, for that long. Litestar runs a sync handler with
`sync_to_thread=True` in its thread pool, so the loop goes on answering while a scrape is rendered."""

from __future__ import annotations

import os

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from gptzoo.server import model_metrics


def render() -> bytes:
    """A scrape in Prometheus' text format (every process's files in multiprocess mode)."""
    model_metrics.reap_forgotten()
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


@get("/metrics", include_in_schema=False, opt={"public": True}, sync_to_thread=True)
def scrape_metrics() -> Response[bytes]:
    return Response(render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
