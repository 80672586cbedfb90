"""Who may use the server: the API and admin keys, and the rules that keep a web page from driving it.

A server without a key on 127.0.0.1 is reachable from every page its operator's browser opens. Browsers let a page
send (not read) a form post or a `text/plain` fetch to any address, and a page whose own name an attacker re-points
at 127.0.0.1 (DNS rebinding) may read the answers too. So, on every route but the public ones (probes, /metrics):
- the `Host` must be one of the server's names: localhost, an IP address (a page at an address was served from
  that address: rebinding needs a name), or one given with `--allowed-host` (`*`: any); otherwise 400;
- a request that changes state (POST, PUT, PATCH, DELETE) with an `Origin` must come from this very server (its
  scheme's host and port equal to the `Host`): a foreign page's, or `null`, is 403;
- such a request's body must be declared `application/json` (415 otherwise): a page can send JSON across sites only
  after a CORS preflight, which this server never grants. A POST without a body may leave Content-Type out (curl
  -X POST on the admin routes); the Origin rule covers a page's bodiless fetch, every browser sends Origin on it."""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler

from gptzoo.server.errors import ApiError, clip

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
DEFAULT_PORTS = {"http": "80", "https": "443"}


def split_host(host: str) -> tuple[str, str | None]:
    """(name, port) of a Host header or an Origin's netloc, the name lowercased and without IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        name, _, rest = host[1:].partition("]")
        return name, (rest[1:] or None) if rest.startswith(":") else None
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port or None
    return host, None  # a name, or a bare IPv6 address (no port can follow it)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(name: str, allowed: list[str] | None) -> bool:
    names = {h.lower().rstrip(".") for h in allowed or ()}
    name = name.rstrip(".")
    return "*" in names or name in names or name == "localhost" or _is_address(name)


def same_origin(origin: str, host: str) -> bool:
    """Whether a page of `origin` was served by this server, reached as `host` (ports compared with the scheme's
    default filled in: `Host: example.com` and `Origin: https://example.com:443` are one server)."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:  # `null` (a sandboxed or file: page) and the like
        return False
    o_name, o_port = split_host(parts.netloc)
    h_name, h_port = split_host(host)
    default = DEFAULT_PORTS[parts.scheme]
    return (o_name, o_port or default) == (h_name, h_port or default)


def _has_body(connection: ASGIConnection) -> bool:
    if "transfer-encoding" in connection.headers:
        return True
    length = connection.headers.get("content-length", "0").strip()
    return not length.isdigit() or int(length) > 0


async def cross_site_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """The three rules above, before the key check: a cross-site request is refused for what it is."""
    if handler.opt.get("public"):
        return
    host = connection.headers.get("host")
    if host is not None:  # no Host at all (HTTP/1.0) is no browser's request
        name, _ = split_host(host)
        if not host_allowed(name, connection.app.state.settings.allowed_hosts):
            raise ApiError(400, f"the Host `{clip(host)}` is not one of this server's names (localhost, its IP "
                                "addresses, and the names given with `gptzoo serve --allowed-host`): a web page may "
                                "have pointed its own name at this server", param="host", code="host_not_allowed")
    if connection.scope["method"] not in STATE_CHANGING:
        return
    origin = connection.headers.get("origin")
    if origin is not None and not same_origin(origin, host or ""):
        raise ApiError(403, f"requests from the web page at Origin `{clip(origin)}` may not change this server's "
                            "state: only its own pages (or clients that send no Origin) may", param="origin",
                       code="cross_origin")
    content_type = connection.headers.get("content-type")
    media = (content_type or "").partition(";")[0].strip().lower()
    if (content_type is not None or _has_body(connection)) and media != JSON:
        got = f"`{clip(content_type)}`" if content_type is not None else "none"
        raise ApiError(415, f"this request must be JSON: send `Content-Type: {JSON}` (got {got}); a POST without a "
                            "body may leave it out", param="content-type", code="unsupported_media_type")


async def api_key_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Bearer-token auth on everything but the probes and /metrics (handlers marked public); the admin routes
    (marked admin) take the admin key when one is set. A coroutine: Litestar runs a plain function guard in its
    thread pool, a hop (and a GIL hand-over) per request for a dict lookup."""
    settings = connection.app.state.settings
    admin = handler.opt.get("admin") and settings.admin_key
    key, what = (settings.admin_key, "admin key") if admin else (settings.api_key, "API key")
    if not key or handler.opt.get("public"):
        return
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if not token:
        raise NotAuthorizedException(f"missing {what}: send the header `Authorization: Bearer <key>`")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise NotAuthorizedException(f"invalid {what}")
