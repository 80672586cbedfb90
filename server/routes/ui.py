"""The playground page (`/`, its files under `/ui/`): a static page that uses only the public API.

The files are a fixed set read from the package: a request names one of them or gets 404, so no path outside
server/static can be served. The page is public like the probes (it holds no data; it asks for the API key itself
and keeps it in the tab's sessionStorage); its API calls meet every rule of gptzoo.server.security. Its CSP keeps
every request on this server: no CDN, font or script from elsewhere can load, and it works offline.
`gptzoo serve --no-ui` leaves these routes out."""

from __future__ import annotations

from importlib import resources

from litestar import Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

FILES = {"playground.js": "text/javascript", "playground.css": "text/css"}  # Litestar adds the charset
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "cache-control": "no-cache"}
PAGE = {"public": True}  # no API key needed to load the page itself


def _read(name: str) -> bytes:
    return resources.files("gptzoo.server").joinpath("static", name).read_bytes()


@get("/", include_in_schema=False, opt=PAGE)
async def playground() -> Response[bytes]:
    return Response(_read("index.html"), media_type="text/html", headers=HEADERS)


@get("/ui/{name:str}", include_in_schema=False, opt=PAGE)
async def playground_file(name: FromPath[str]) -> Response[bytes]:
    if name not in FILES:  # a fixed list: no path (.., %2F, absolute) reaches the file system
        raise NotFoundException(f"no playground file `{name[:100]}`")
    return Response(_read(name), media_type=FILES[name], headers=HEADERS)


ROUTES = [playground, playground_file]
