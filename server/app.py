"""The Litestar app: `create_app(settings)` for tests and embedding, `create_app_from_env` for uvicorn's workers.

    uvicorn --factory gptzoo.server.app:create_app_from_env      # settings from GPTZOO_* variables

The lifespan starts one worker thread per variant (load, warm-up, serve) and, unless `load_in_background`, waits
until every model is ready or has failed before the server accepts requests; then the live zoo follows the store
(gptzoo.server.reload). On SIGTERM or Ctrl-C the workers drain, and on a second one the process exits at once
(see `drain_on_signals`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import metadata

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig

from gptzoo.server import buckets, errors, tracing
from gptzoo.server.body import BodyGuard
from gptzoo.server.registry import Registry
from gptzoo.server.reload import LiveZoo
from gptzoo.server.routes import ROUTES, ui
from gptzoo.server.routes.metrics import scrape_metrics
from gptzoo.server.security import api_key_guard, cross_site_guard
from gptzoo.server.serving import CompletionService
from gptzoo.server.settings import Settings

log = logging.getLogger("gptzoo.server")




def provide_router(state: State) -> Registry:
    return state.registry


def provide_service(state: State) -> CompletionService:
    return state.service


def provide_zoo(state: State) -> LiveZoo:
    return state.zoo


def drain_on_signals(router: Registry, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Start draining the workers when the server is told to stop, and stop at once when told again; returns the
    undo.

    uvicorn, on SIGTERM/SIGINT, stops accepting connections and waits up to its timeout_graceful_shutdown for open
    requests, but tells the app only afterwards (lifespan shutdown). So chain onto its handlers: from the signal on,
    new requests get 503 while queued and running ones finish, and what is left near the deadline fails with a clear
    error instead of a cut connection. Only chains onto a Python handler (uvicorn's): over SIG_DFL it would swallow
    the signal; and only in the main thread (TestClient runs the lifespan in another one).

    The same signal a second time exits at once (see `exit_now`). The same one only: with --workers, Ctrl-C in a
    terminal brings each worker the terminal's SIGINT and then uvicorn's supervisor's SIGTERM, one request to stop."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: h for sig in (signal.SIGTERM, signal.SIGINT) if callable(h := signal.getsignal(sig))}
    seen: set[int] = set()

    def handler(sig, frame) -> None:
        if sig in seen:
            exit_now(sig)
        seen.add(sig)
        loop.call_soon_threadsafe(stopping, router, signal.Signals(sig).name)  # on the loop, not inside whatever
        previous[sig](sig, frame)                                              # the signal interrupted

    for sig in previous:
        signal.signal(sig, handler)
    return lambda: [signal.signal(sig, h) for sig, h in previous.items()]


def stopping(router: Registry, name: str) -> None:
    log.warning("%s: stopping; requests in flight may finish (a second %s stops at once)", name, name)
    router.drain()


def exit_now(sig: int) -> None:
    """A second SIGINT or SIGTERM: the operator will not wait. Left to uvicorn, a second SIGINT cancelled every
    running request's task (one ASGI traceback each) and exited 0, and a second SIGTERM did nothing. Exits 128 +
    the signal's number, as a shell reports a process the signal ended, without running any more Python: no
    handler may block it, and nothing the server holds needs saving (models are read-only files). The line goes out
    with a plain write: a signal handler must not take a lock (logging's, a worker's) that the code it
    interrupted may hold."""
    os.write(2, f"gptzoo serve: second {signal.Signals(sig).name}: exiting now; requests in flight are cut off\n"
             .encode())
    os._exit(128 + sig)


def package_version() -> str:
    try:
        return metadata.version("gptzoo")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings | None = None, tracer_provider=None) -> Litestar:
    """`tracer_provider`: an OpenTelemetry TracerProvider for the request spans (tests); by default one exporting
    over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, else none: no tracing at all (gptzoo.server.tracing)."""
    settings = settings or Settings()
    own = tracer_provider is None
    provider = tracing.provider_from_env() if own else tracer_provider

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        router = Registry(settings)
        app.state.registry = router
        app.state.zoo = zoo = LiveZoo(router)
        app.state.service = CompletionService(router, settings)
        router.start()
        undo = drain_on_signals(router, asyncio.get_running_loop())
        try:
            if not settings.load_in_background:
                await asyncio.to_thread(router.wait_loaded)
            # What loading made (modules, the app, the sessions' Python side) lives as long as the server: out of the
            # collector's sight, a full collection under load walks only what requests make (issue 27: collections
            # were part of the slowest first tokens)
            gc.collect()
            gc.freeze()
            zoo.start(settings.reload_interval)
            yield
        finally:
            gc.unfreeze()  # an app that is not the process's only one (tests, embedding) leaves nothing pinned
            undo()
            zoo.stop()
            await asyncio.to_thread(router.close)
            if own and provider is not None:
                await asyncio.to_thread(provider.shutdown)  # the last spans go out

    return Litestar(
        route_handlers=[*ROUTES, scrape_metrics, *(ui.ROUTES if settings.ui else [])],  # the playground page
        lifespan=[lifespan],
        state=State({"settings": settings}),
        dependencies={"router": Provide(provide_router, sync_to_thread=False),
                      "service": Provide(provide_service, sync_to_thread=False),
                      "zoo": Provide(provide_zoo, sync_to_thread=False)},
        guards=[cross_site_guard, api_key_guard],  # in this order: a cross-site request is refused as such
        exception_handlers=errors.HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        # BodyGuard inside the Prometheus middleware: its 408s and disconnects (499) are recorded with their status
        # the trace middleware outermost (when tracing): its span and header cover every answer, errors included
        middleware=[*([DefineMiddleware(tracing.TraceMiddleware, provider=provider)] if provider else []),
                    PrometheusConfig(app_name="gptzoo", prefix="gptzoo_http", group_path=True,
                                     buckets=buckets.REQUEST_SECONDS, exclude=["^/metrics"]).middleware,
                    BodyGuard(settings.body_timeout)],
        openapi_config=OpenAPIConfig(
            title="gptzoo",
            version=package_version(),
            description="OpenAI-compatible completions over a zoo of GPT models that differ only in depth.",
        ),
        logging_config=None,  # uvicorn's logging config (set by `gptzoo serve`) applies
        debug=False,
    )


def create_app_from_env() -> Litestar:
    return create_app(Settings.from_env())
