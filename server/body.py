"""The request body on its way in: how long it may take, what a hang-up means, and a 400 that says what is wrong for
every body that is not a readable JSON document.

Left to Litestar, a client that hangs up mid-body is a 500, a body that is not UTF-8 or nests too deeply escapes as
UnicodeDecodeError or RecursionError (500), an empty body is reported as `'data'` and a lone surrogate as "Input
data was truncated"."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator

import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import SerializationException, ValidationException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gptzoo.server import ttft_trace
from gptzoo.server.errors import CLIENT_GONE, ApiError, bad_request, clip

EMPTY = "the request body is empty: send a JSON object with `model` and `prompt`"


class BodyGuard(ASGIMiddleware):
    """Bounds the time a request body may take to arrive, and marks a client that hung up.

    uvicorn has no timeout while a request arrives: `timeout_keep_alive` covers only the idle time between requests
    and every byte received resets it, so a client trickling its body would hold a connection and a handler for as
    long as it likes. From the moment the headers are in, the whole body must arrive within `timeout` seconds, or
    reading it fails with 408 and the connection is closed. A disconnect is noted in the scope's state so that the
    error it causes is counted as client_closed (499), not as a server error."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, timeout: float):
        self.timeout = timeout

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if ttft_trace.ON:
            ttft_trace.received(scope)
        deadline = asyncio.get_running_loop().time() + self.timeout
        reading = True  # until the last body chunk (or a disconnect) has come

        async def guarded_receive() -> Message:
            nonlocal reading
            if reading:
                try:
                    async with asyncio.timeout_at(deadline):  # what already arrived is still delivered when late
                        message = await receive()
                except TimeoutError:
                    raise ApiError(408, f"the request body did not arrive within {self.timeout:g} s: this server "
                                        "closes connections that send their body this slowly", code="body_timeout",
                                   headers={"Connection": "close"}) from None
                reading = message["type"] == "http.request" and message.get("more_body", False)
            else:
                message = await receive()
            if message["type"] == "http.disconnect":
                scope.setdefault("state", {})[CLIENT_GONE] = True
            return message

        await next_app(scope, guarded_receive, send)


async def read_json_body(request: Request) -> None:
    """A before-request hook: decodes the JSON body ahead of Litestar (which then takes it from the connection's
    cache for the handler's `data`), so that each way a body can be unreadable gets its own 400."""
    body = await request.body()
    if not body.strip(b" \t\r\n"):
        raise bad_request(EMPTY, code="invalid_body")
    try:
        await request.json()
    except RecursionError:
        raise bad_request("the request body is nested too deeply: arrays or objects inside one another, more levels "
                          "than any valid request has", code="invalid_body") from None
    except (UnicodeDecodeError, SerializationException) as e:
        # Which error a decoder raises for bad UTF-8 is its own choice (msgspec 0.23 stopped raising
        # UnicodeDecodeError), so the body itself is checked: the client learns the byte and its offset either way.
        if (bad := _bad_byte(body)) is not None:
            raise bad_request(f"the request body is not valid UTF-8 ({bad}): send JSON encoded as UTF-8",
                              code="invalid_body") from None
        raise _not_json(body, str(e.__cause__ or getattr(e, "detail", e))) from None


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")  # where msgspec says the value at fault is: `$.stop[1]`


def json_body(schema: type) -> Callable[[Request], Awaitable[None]]:
    """The before-request hook of a route whose body is `schema`: read_json_body, then every field's type checked
    strictly. Litestar converts a body as leniently as a query string (strict=False: "5" passes for an int, "inf"
    for a float, "false" and 0 for a bool), which JSON, typed already, does not need; a value of the wrong type is a
    400 naming its field instead (on_validation_error words it, as for Litestar's own validation)."""

    async def hook(request: Request) -> None:
        await read_json_body(request)
        try:
            msgspec.convert(await request.json(), schema, strict=True)
        except msgspec.ValidationError as e:
            text = str(e)
            at = _AT.search(text)
            detail, key = (text[:at.start()], at.group("path") or "data") if at else (text, "data")
            raise ValidationException(detail=detail, extra=[{"message": detail, "key": key, "source": "body"}]) \
                from None

    return hook


def _bad_byte(body: bytes) -> str | None:
    """Where a body stops being UTF-8, or None when it is UTF-8 throughout."""
    try:
        body.decode()
    except UnicodeDecodeError as e:
        return f"byte 0x{body[e.start]:02x} at offset {e.start}"
    return None


def _not_json(body: bytes, reason: str) -> ApiError:
    """msgspec refuses a lone UTF-16 surrogate (a `\\ud800` escape without its pair; no character, and no UTF-8 for
    it) and the bare NaN / Infinity some encoders write for floats (Python's json among them) with a message about
    the JSON's syntax. The standard library reads both, so it can tell where they are."""
    try:
        doc = json.loads(body)
        found, number = _lone_surrogate(doc), _non_finite(doc)
    except (ValueError, RecursionError):  # not JSON for the standard library either
        found = number = None
    if number is not None:
        path, value = number
        return bad_request(f"invalid `{path}`: {value} is not a number JSON allows; send a finite number",
                           path or None, "invalid_value")
    if found is None:
        return bad_request(f"the request body is not valid JSON: {reason}", code="invalid_body")
    path, in_name, char = found
    what = (f"a field name in `{path}`" if path else "a field name") if in_name else f"invalid `{path}`: it"
    return bad_request(f"{what} contains a lone surrogate (\\u{char:04x}, half of a UTF-16 pair without the other "
                       "half), which is not a character: send valid Unicode text", path or None)


def _nodes(doc: object) -> Iterator[tuple[str, object]]:
    """(path, value) of every value in a parsed document, depth first in document order. A loop, not recursion:
    the document may be nested as deep as the standard library reads."""
    stack: list[tuple[str, object]] = [("", doc)]
    while stack:
        path, value = stack.pop()
        yield path, value
        if isinstance(value, dict):
            stack.extend(reversed([(f"{path}.{clip(k)}" if path else clip(k), v) for k, v in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(value)]))


def _lone_surrogate(doc: object) -> tuple[str, bool, int] | None:
    """(path of the first string holding a lone surrogate, whether that string is a field name, the surrogate)."""
    for path, value in _nodes(doc):
        if isinstance(value, str):
            if (char := _surrogate_in(value)) is not None:
                return path, False, char
        elif isinstance(value, dict):
            for key in value:
                if (char := _surrogate_in(key)) is not None:
                    return path, True, char
    return None


def _non_finite(doc: object) -> tuple[str, str] | None:
    """(path, spelling) of the first NaN or infinity in a document the standard library read."""
    for path, value in _nodes(doc):
        if isinstance(value, float) and not math.isfinite(value):
            return path, "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return None


def _surrogate_in(text: str) -> int | None:
    try:
        text.encode()
    except UnicodeEncodeError as e:
        return ord(text[e.start])
    return None
