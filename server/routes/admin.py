"""The live zoo's controls (behind the API key when one is set): rescan the store, load and unload a variant, and
each variant's state, file and load time."""

from __future__ import annotations

from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from gptzoo.server.admin_schemas import AdminModel, AdminModels, DrainingModel, NextVersion, ReloadReport
from gptzoo.server.errors import ApiError, ErrorResponse
from gptzoo.server.reload import LiveZoo
from gptzoo.server.worker import ModelWorker
from gptzoo.zoo.store import card_family

TAGS = ["admin"]
ADMIN = {"admin": True}  # behind the admin key when one is set (gptzoo.server.security)
AUTH = {401: ResponseSpec(ErrorResponse, description="Missing or wrong key (the admin key when one is set)"),
        403: ResponseSpec(ErrorResponse, description="A state change sent by a web page of another origin"),
        415: ResponseSpec(ErrorResponse, description="A body not declared `Content-Type: application/json`")}
UNKNOWN = {404: ResponseSpec(ErrorResponse, description="Unknown model (the message lists the available ones)")}
STOPPING = {503: ResponseSpec(ErrorResponse, description="The server is shutting down, or the store cannot be read")}


def admin_model(zoo: LiveZoo, w: ModelWorker) -> AdminModel:
    r, c = zoo.router, w.card
    nxt = r.standby.get(w.id) or zoo.failed.get(w.id)
    return AdminModel(
        id=w.id, state=w.state, ready=w.ready, reason=w.reason, sha256=w.sha256, loaded_at=w.loaded_at,
        provider=w.provider, n_layer=c and c.n_layer, dataset=c and c.dataset_name, aliases=r.aliases_of(w.id),
        requests=w.in_flight, draft=w.draft_id, arch=c and c.arch, family=card_family(c),
        next=NextVersion(state=nxt.state, sha256=nxt.sha256, reason=nxt.reason) if nxt else None,
    )


@get("/admin/models", summary="Every variant's state, file and load time, and versions still draining", tags=TAGS,
     responses=AUTH, opt=ADMIN)
async def admin_models(zoo: NamedDependency[LiveZoo]) -> AdminModels:
    return AdminModels(
        data=[admin_model(zoo, w) for w in zoo.router.workers.values()],
        draining=[DrainingModel(id=w.id, sha256=w.sha256, loaded_at=w.loaded_at, requests=w.in_flight)
                  for w in zoo.router.retiring],
    )


@post("/admin/reload", status_code=200, summary="Rescan the store now", tags=TAGS, responses={**AUTH, **STOPPING},
      opt=ADMIN)
async def reload_store(zoo: NamedDependency[LiveZoo]) -> ReloadReport:
    """New variants start loading, re-exported ones load beside the serving version (which serves until the new
    one is ready), removed ones finish their requests and unload. Returns once the changes are under way; a call
    while a rescan runs waits for the next one, which every such call shares."""
    return await zoo.reload()


@post("/admin/models/{model_id:str}/load", opt=ADMIN, summary="Load a variant (id or alias)", tags=TAGS,
      responses={**AUTH, **UNKNOWN, **STOPPING,
                 202: ResponseSpec(AdminModel, description="Loading (this call's load, or one under way already)"),
                 409: ResponseSpec(ErrorResponse, description="The store's version cannot serve (the reason)")})
async def load_model(model_id: FromPath[str], zoo: NamedDependency[LiveZoo]) -> Response[AdminModel]:
    """Serves the store's version of the variant: starts its load, unless it serves that version already (200) or a
    load of it is under way (202, joined: never two loads of one variant). Loads a failed variant again."""
    w = await zoo.load(model_id)
    if why := zoo.cannot_serve(w.id):
        serving = " (the loaded version serves on)" if w.ready else ""
        raise ApiError(409, f"model {w.id} cannot be loaded: {why}{serving}", param="model_id",
                       code="model_not_loadable")
    return Response(admin_model(zoo, w), status_code=202 if zoo.loading(w.id) else 200)


@post("/admin/models/{model_id:str}/unload", opt=ADMIN, status_code=200, summary="Unload a variant (id or alias)",
      tags=TAGS,
      responses={**AUTH, **UNKNOWN, **STOPPING,
                 409: ResponseSpec(ErrorResponse, description="The variant is loading")})
async def unload_model(model_id: FromPath[str], zoo: NamedDependency[LiveZoo]) -> AdminModel:
    """Takes the variant out of service at once (new requests get 503); the requests it holds finish, then it
    unloads (GET /admin/models lists it under `draining` until then). It stays unloaded, also across rescans,
    until loaded again. Unloading the last ready variant is allowed: /readyz then answers 503."""
    return admin_model(zoo, zoo.unload(model_id))


ROUTES = [admin_models, reload_store, load_model, unload_model]
