"""GET /v1/models and /v1/models/{id}: every variant in the store, with its depth, quality and state."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from gptzoo.server import routing
from gptzoo.server.errors import ErrorResponse
from gptzoo.server.registry import Registry
from gptzoo.server.schemas import ModelCard, ModelList
from gptzoo.server.worker import ModelWorker, created_at
from gptzoo.zoo.store import card_family


def model_card(router: Registry, w: ModelWorker) -> ModelCard:
    c = w.card  # None for a broken card: only its id, state and reason are known
    return ModelCard(
        id=w.id, created=created_at(c), aliases=router.aliases_of(w.id), n_layer=c and c.n_layer,
        n_head=c and c.n_head, n_embd=c and c.n_embd, block_size=c and c.block_size, vocab_size=c and c.vocab_size,
        params=c and c.params, val_loss=c and c.val_loss, dataset=c and c.dataset_name,
        quantization=c and c.quantization, provider=w.provider, ready=w.ready, state=w.state, reason=w.reason,
        draft=w.draft_id, arch=c and c.arch, arch_args=c and c.arch_args, family=card_family(c),
    )


def routed_card(name: str, kind: str, members: list[ModelWorker]) -> ModelCard:
    """A name that routes: `auto`, or a family (any depth of one dataset)."""
    ready = any(w.ready for w in members)
    states = {w.state for w in members}
    state = ("ready" if ready else "loading" if "loading" in states else "unloaded" if states == {"unloaded"}
             else "failed")
    return ModelCard(
        id=name, created=max(created_at(w.card) for w in members), aliases=[], n_layer=None, n_head=None, n_embd=None,
        block_size=None, vocab_size=None, params=None, val_loss=None, dataset=members[0].card.dataset_name,
        quantization=None, provider=None, ready=ready, state=state,
        reason=None if ready else "none of its variants is ready", kind=kind,
        variants=[w.id for w in routing.quality_order(members)], arch=members[0].card.arch,
        family=card_family(members[0].card),
    )


def routed_cards(router: Registry) -> dict[str, ModelCard]:
    """Each family (a model name that picks a depth by the request's latency budget) and `auto` (one of them: see
    Registry.auto_family), by name."""
    fams = routing.families(list(router.workers.values()))
    cards = {f: routed_card(f, "family", members) for f, members in sorted(fams.items())}
    if (auto := router.auto_family) is not None:
        cards[routing.AUTO] = routed_card(routing.AUTO, "auto", fams[auto])
    return cards


@get("/v1/models", summary="List the models", tags=["models"])
async def list_models(router: NamedDependency[Registry]) -> ModelList:
    """Every variant, then each family and `auto`. A folder named like one of those (a broken variant: the name is
    reserved) is listed by /readyz and /admin/models only, so each name here means one thing."""
    routed = routed_cards(router)
    variants = [model_card(router, w) for w in router.workers.values() if w.id not in routed]
    return ModelList(data=variants + list(routed.values()))


@get("/v1/models/{model_id:str}", summary="Describe one model (by id or alias), a family or auto", tags=["models"],
     responses={404: ResponseSpec(ErrorResponse, description="Unknown model")})
async def get_model(model_id: FromPath[str], router: NamedDependency[Registry]) -> ModelCard:
    if card := routed_cards(router).get(model_id):  # a routed name wins over a folder (broken) of that name
        return card
    return model_card(router, router.get(model_id))


ROUTES = [list_models, get_model]
