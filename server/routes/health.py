"""Probes, open without an API key: /healthz (the process answers) and /readyz (some model serves)."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from gptzoo.server.registry import Registry
from gptzoo.server.schemas import Health, ModelState, Readiness

PUBLIC = {"public": True}  # skips the API-key guard


@get("/healthz", summary="Liveness", tags=["health"], opt=PUBLIC)
async def healthz() -> Health:
    return Health()


@get("/readyz", summary="Readiness: 200 when at least one model is ready", tags=["health"], opt=PUBLIC,
     responses={503: ResponseSpec(Readiness, description="No model is ready")})
async def readyz(router: NamedDependency[Registry]) -> Response[Readiness]:
    states = [ModelState(id=w.id, state=w.state, ready=w.ready, provider=w.provider, reason=w.reason)
              for w in router.workers.values()]
    ready = router.any_ready and not router.draining  # draining: load balancers should stop sending requests
    reason = None
    if router.draining:
        reason = "the server is shutting down"
    elif not ready:
        reason = "no model is ready: " + ("; ".join(f"{s.id} {s.state}" + (f" ({s.reason})" if s.reason else "")
                                                    for s in states) or "the store has none")
    return Response(Readiness(status="ready" if ready else "not_ready", models=states, reason=reason),
                    status_code=200 if ready else 503)


ROUTES = [healthz, readyz]
