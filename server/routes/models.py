"""GET /v1/models and /v1/models/{id}: every variant in the store, with its depth, quality and state."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from gptzoo.server.errors import ErrorResponse
from gptzoo.server.router import ModelRouter
from gptzoo.server.schemas import ModelCard, ModelList
from gptzoo.server.worker import ModelWorker, created_at


def model_card(router: ModelRouter, w: ModelWorker) -> ModelCard:
    c = w.card  # None for a broken card: only its id, state and reason are known
    return ModelCard(
        id=w.id, created=created_at(c), aliases=router.aliases_of(w.id), n_layer=c and c.n_layer,
        n_head=c and c.n_head, n_embd=c and c.n_embd, block_size=c and c.block_size, vocab_size=c and c.vocab_size,
        params=c and c.params, val_loss=c and c.val_loss, dataset=c and c.dataset_name,
        quantization=c and c.quantization, provider=w.provider, ready=w.ready, state=w.state, reason=w.reason,
    )


@get("/v1/models", summary="List the models", tags=["models"])
async def list_models(router: NamedDependency[ModelRouter]) -> ModelList:
    return ModelList(data=[model_card(router, w) for w in router.workers.values()])


@get("/v1/models/{model_id:str}", summary="Describe one model (by id or alias)", tags=["models"],
     responses={404: ResponseSpec(ErrorResponse, description="Unknown model")})
async def get_model(model_id: FromPath[str], router: NamedDependency[ModelRouter]) -> ModelCard:
    return model_card(router, router.get(model_id))


ROUTES = [list_models, get_model]
