"""POST /v1/completions, JSON or Server-Sent Events."""

from __future__ import annotations

from litestar import Request, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from litestar.response import ServerSentEvent

from gptzoo.server.errors import ErrorResponse
from gptzoo.server.schemas import CompletionRequest, CompletionResponse
from gptzoo.server.serving import CompletionService

ERRORS = {
    400: ResponseSpec(ErrorResponse, description="Invalid request: the message names the field"),
    401: ResponseSpec(ErrorResponse, description="Missing or wrong API key"),
    404: ResponseSpec(ErrorResponse, description="Unknown model (the message lists the available ones)"),
    413: ResponseSpec(ErrorResponse, description="Request body over the size limit"),
    429: ResponseSpec(ErrorResponse, description="Too many requests waiting for this model"),
    503: ResponseSpec(ErrorResponse, description="Model not ready (loading or failed to load)"),
}

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "X-Accel-Buffering": "no"}


@post("/v1/completions", status_code=200, summary="Create a completion", tags=["completions"], responses=ERRORS)
async def create_completion(
    data: JSONBody[CompletionRequest], request: Request, service: NamedDependency[CompletionService]
) -> CompletionResponse:
    """OpenAI's completions API. With `stream: true` the answer is `text/event-stream`: one `text_completion`
    chunk per piece of text, the finish reason in the last chunk, then `data: [DONE]`."""
    prepared = await service.prepare(data, request.scope.setdefault("state", {}))
    if data.stream:
        # explicit Content-Type: Litestar would otherwise apply the handler's JSON media type to the stream
        return ServerSentEvent(service.stream(prepared), headers=SSE_HEADERS)  # type: ignore[return-value]
    return await service.complete(prepared)


ROUTES = [create_completion]
