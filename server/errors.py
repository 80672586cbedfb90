"""One error shape for every failure, as OpenAI's: {"error": {"message", "type", "param", "code"}}.

The registry and the workers answer with domain outcomes (gptzoo.server.refusals: Refused, UnknownModel; the Failed
event): `STATUS` is the one table from an outcome's code to its HTTP status. Request checks raise ApiError;
Litestar's own errors (validation, 404/405, 413, guards) are mapped to the same shape by the app-level handlers
below, and anything unexpected becomes a 500 without a traceback in the body."""

from __future__ import annotations

import logging
import re

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from gptzoo.server import outcomes
from gptzoo.server.refusals import Refused, UnknownModel
from gptzoo.zoo.errors import GptzooError

log = logging.getLogger("gptzoo.server")

# OpenAI's error types by status.
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
         405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error",
         415: "invalid_request_error", 429: "rate_limit_error", 499: "invalid_request_error", 500: "server_error",
         503: "service_unavailable_error"}
CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 408: "body_timeout",
         413: "request_too_large", 415: "unsupported_media_type", 429: "rate_limited", 499: "client_closed",
         503: "unavailable"}
# A domain outcome's HTTP status, by its code (gptzoo.server.refusals and the worker's Failed events).
STATUS = {"model_not_found": 404, "overloaded": 429, "generation_failed": 500, "model_not_ready": 503,
          "queue_timeout": 503, "shutting_down": 503, "store_unavailable": 503}
ECHO_CHARS = 100  # request content quoted back in a message is cut to this many characters
CLIENT_GONE = "gptzoo_client_gone"  # scope state key, set by server.body's middleware when the client hangs up


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class ApiError(GptzooError):
    """A failure the client should see, with its status code and a human-readable message."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}


def status_of(code: str) -> int:
    return STATUS.get(code, 500)


def outcome_error(code: str, message: str, retry_after: str | None = None, param: str | None = None) -> ApiError:
    """A domain outcome as the HTTP answer it gets."""
    return ApiError(status_of(code), message, param=param, code=code,
                    headers={"Retry-After": retry_after} if retry_after else None)


def from_domain(e: Refused | UnknownModel) -> ApiError:
    return outcome_error(e.code, e.message, getattr(e, "retry_after", None), e.param)


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """Request content to quote in a message: a client must not get its 100 kB back (nor fill the logs with it)."""
    return text if len(text) <= limit else f"{text[:limit]}…"


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body = ErrorResponse(ErrorBody(message, TYPES.get(status, "invalid_request_error"), param, code))
    return Response(body, status_code=status, headers=headers)


def _count(request: Request, outcome: str) -> None:
    outcomes.record(request.scope, outcome)


def on_api_error(request: Request, exc: ApiError) -> Response:
    _count(request, exc.code or "error")
    return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)


def on_domain_error(request: Request, exc: Refused | UnknownModel) -> Response:
    return on_api_error(request, from_domain(exc))


_BACKTICKED = re.compile(r"`([^`]+)`")


def on_validation_error(request: Request, exc: ValidationException) -> Response:
    """msgspec's message names the field: `key` is the path of the object or value at fault ("data" for the body
    itself), and an unknown or missing field's own name is in backticks in the message."""
    first = (exc.extra or [{}])[0] if isinstance(exc.extra, list) else {}
    key, detail = first.get("key"), first.get("message") or exc.detail or ""
    if key == "data":
        key = None
    named = _BACKTICKED.search(detail)
    if named and ("unknown field" in detail or "missing required field" in detail):
        field = clip(named.group(1))  # a field inside an object is named by its whole path: stream_options.foo
        key = f"{key}.{field}" if key else field
    if "unknown field" in detail:
        message, code = f"unknown field `{key}`: this server does not support it", "unknown_field"
    elif "missing required field" in detail:
        message, code = f"missing required field `{key}`", "missing_field"
    elif key:
        message, code = f"invalid `{key}`: {clip(detail, 2 * ECHO_CHARS)}", "invalid_value"
    else:
        message, code = f"invalid request body: {clip(detail, 2 * ECHO_CHARS)}", "invalid_body"
    _count(request, "invalid_request")
    return error_response(400, message, key, code)


def client_gone(request: Request) -> bool:
    return bool(request.scope.get("state", {}).get(CLIENT_GONE))


def on_http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    message = exc.detail
    if status >= 500 and client_gone(request):
        # Litestar reports a client that hung up before its body was in as a 500 ("client disconnected
        # prematurely"): no server fault, and nobody is left to read the answer. Counted as 499, never as a 5xx.
        status, message = 499, "the client closed the connection before sending its whole request"
    elif status == 413:
        limit = request.app.state.settings.max_body_bytes
        message = f"the request body is larger than this server's limit of {limit:,} bytes"
    elif status == 404:
        message = f"no route {request.method} {clip(request.url.path)}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {clip(request.url.path)}"
    headers = dict(exc.headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    _count(request, CODES.get(status, "invalid_request"))
    return error_response(status, message, code=CODES.get(status), headers=headers)


def on_internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    _count(request, "error")
    return error_response(500, "internal server error (see the server log)", code="internal_error")


HANDLERS = {ApiError: on_api_error, Refused: on_domain_error, UnknownModel: on_domain_error,
            ValidationException: on_validation_error, HTTPException: on_http_error,
            Exception: on_internal_error}
