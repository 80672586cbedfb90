"""POST /v1/completions, JSON or Server-Sent Events."""

from __future__ import annotations

from litestar import Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from litestar.response import Stream

from gptzoo.server.body import json_body
from gptzoo.server.errors import ErrorResponse
from gptzoo.server.schemas import CompletionRequest, CompletionResponse
from gptzoo.server.serving import CompletionService

ERRORS = {
    400: ResponseSpec(ErrorResponse, description="Invalid request: the message names the field (or a Host that is "
                                                 "not one of the server's names)"),
    401: ResponseSpec(ErrorResponse, description="Missing or wrong API key"),
    403: ResponseSpec(ErrorResponse, description="Sent by a web page of another origin (`Origin`)"),
    404: ResponseSpec(ErrorResponse, description="Unknown model (the message lists the available ones)"),
    408: ResponseSpec(ErrorResponse, description="The request body did not arrive within the server's body timeout"),
    413: ResponseSpec(ErrorResponse, description="Request body over the size limit"),
    415: ResponseSpec(ErrorResponse, description="The body is not declared `Content-Type: application/json`"),
    429: ResponseSpec(ErrorResponse, description="Too many requests waiting for this model (Retry-After)"),
    503: ResponseSpec(ErrorResponse, description="Model not ready (loading or failed to load), no batch slot within "
                                                 "the request timeout, or the server is shutting down"),
}

# what Litestar's ServerSentEvent response sends; a plain Stream carries the frames, which `stream` encodes whole
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
               "Connection": "keep-alive", "X-Accel-Buffering": "no"}


@post("/v1/completions", status_code=200, summary="Create a completion", tags=["completions"], responses=ERRORS,
      before_request=json_body(CompletionRequest))
async def create_completion(
    data: JSONBody[CompletionRequest], request: Request, service: NamedDependency[CompletionService]
) -> CompletionResponse:
    """OpenAI's completions API. With `stream: true` the answer is `text/event-stream`: one `text_completion`
    chunk per piece of text, the finish reason in the last chunk, then `data: [DONE]`. The headers
    `x-gptzoo-model` and `x-gptzoo-route` say which variant served and why (named, best-fit, fastest-no-fit,
    fallback-overload)."""
    prepared = await service.prepare(data, request.scope)
    first = await service.first_event(prepared, request.receive)
    if data.stream:
        # explicit Content-Type: Litestar would otherwise apply the handler's JSON media type to the stream. A Stream,
        # not a ServerSentEvent: that one would parse and re-encode every frame. The background task ends the job
        # once the response is over: when the client leaves, Litestar cancels the stream, which may leave the
        # generator unstarted or parked at a `yield` with its `finally` not run.
        return Stream(service.stream(prepared, first), headers=SSE_HEADERS | prepared.headers,  # type: ignore[return-value]
                      background=BackgroundTask(service.release, prepared))
    return Response(service.response(prepared, first), headers=prepared.headers)  # type: ignore[return-value]


ROUTES = [create_completion]
