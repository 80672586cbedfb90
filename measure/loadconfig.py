"""The options of a load test (`gptzoo loadtest`, gptzoo.measure.loadtest) and their limits: every run is bounded (at
most MAX_REQUESTS requests, MAX_DURATION_S seconds of issuing, MAX_CONCURRENCY clients, each request under its own
timeout), and only loopback hosts are accepted unless `allow_remote` is set. No third-party import at module level:
the CLI reads the limits without the `serve` extra."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from dataclasses import dataclass

from gptzoo.zoo.errors import BadValue

MAX_REQUESTS = 100_000
MAX_DURATION_S = 3600.0
MAX_CONCURRENCY = 1024
DEFAULT_REQUESTS = 100  # when neither a request count nor a duration is given


class LoadTestError(BadValue):
    """A run that cannot start: bad options, or the server is unreachable."""


class RemoteNotAllowed(LoadTestError):
    """The URL's host is not a loopback address and remote targets were not allowed."""


@dataclass(frozen=True)
class LoadConfig:
    url: str = "http://127.0.0.1:8000"
    model: str = ""
    concurrency: int = 8
    requests: int | None = None  # total; None: DEFAULT_REQUESTS, or MAX_REQUESTS when a duration is given
    duration: float | None = None  # seconds after which no new request starts
    max_tokens: int = 64
    prompt: str = "ROMEO:"
    temperature: float | None = None  # None: the server's default
    seed: int | None = None  # request i is sent with seed + i
    stream: bool = True
    timeout: float = 60.0  # per request, whole response included
    api_key: str | None = None
    allow_remote: bool = False
    # gptzoo's depth-routing extensions, sent when set; a request is "within budget" when the client measured its
    # time to first token and mean time per output token within them
    max_tpot_ms: float | None = None
    max_ttft_ms: float | None = None
    fallback: str | None = None  # "none" or "shallower"

    def validated(self) -> LoadConfig:
        """Checks the options and the URL; returns the config with its limits resolved."""
        if not self.model:
            raise LoadTestError("a model is required (an id such as shakespeare-char-4l, or an alias such as 4l)")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise LoadTestError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {self.concurrency}")
        if self.requests is not None and not 1 <= self.requests <= MAX_REQUESTS:
            raise LoadTestError(f"requests must be between 1 and {MAX_REQUESTS}, not {self.requests}")
        if self.duration is not None and not 0 < self.duration <= MAX_DURATION_S:
            raise LoadTestError(f"duration must be over 0 and at most {MAX_DURATION_S:.0f} s, not {self.duration}")
        if not 0 < self.timeout <= MAX_DURATION_S:
            raise LoadTestError(f"timeout must be over 0 and at most {MAX_DURATION_S:.0f} s, not {self.timeout}")
        if self.max_tokens < 1:
            raise LoadTestError(f"max_tokens must be at least 1, not {self.max_tokens}")
        for name in ("max_tpot_ms", "max_ttft_ms"):
            if (v := getattr(self, name)) is not None and not (v > 0 and math.isfinite(v)):
                raise LoadTestError(f"{name} must be a number over 0, not {v}")
        if self.fallback not in (None, "none", "shallower"):
            raise LoadTestError(f"fallback must be none or shallower, not {self.fallback!r}")
        requests = self.requests or (MAX_REQUESTS if self.duration else DEFAULT_REQUESTS)
        return dataclasses.replace(self, url=check_url(self.url, self.allow_remote), requests=requests)


def check_url(url: str, allow_remote: bool = False) -> str:
    """The server's base URL (no trailing slash, no /v1); a non-loopback host raises RemoteNotAllowed unless
    allow_remote."""
    import httpx

    try:
        u = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError) as e:
        raise LoadTestError(f"invalid URL {url!r}: {e}") from None
    if u.scheme not in ("http", "https") or not u.host:
        raise LoadTestError(f"invalid URL {url!r}: expected http://HOST[:PORT]")
    if not allow_remote and not is_loopback(u.host):
        raise RemoteNotAllowed(f"{u.host} is not a loopback address (127.0.0.0/8, ::1, localhost); pass "
                               "--allow-remote to load a remote server")
    base = str(u.copy_with(query=None, fragment=None)).rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def is_loopback(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)
