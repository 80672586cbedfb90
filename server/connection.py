"""uvicorn's h11 protocol with a deadline on each request's head: a connection that opens and never sends, or sends
its request line and headers a byte at a time, is closed after `header_timeout` seconds.

uvicorn (0.55) arms its keep-alive timer only after a response and cancels it at the first byte received, so
neither case was ever timed: each such connection held a socket and a file descriptor for as long as the client
liked. The body has its own deadline once the head is in (gptzoo.server.body.BodyGuard). This subclass leans on
these members of H11Protocol: `connection_made`, `data_received`, `on_response_complete` and `cycle` (set when a
request's head is complete); tests/server/test_connections.py fails if a uvicorn release changes them."""

from __future__ import annotations

import asyncio
import functools
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

from gptzoo.server.settings import Settings

log = logging.getLogger("gptzoo.server")


@functools.cache
def header_timeout() -> float:
    """From the environment `gptzoo serve` hands its settings over in (uvicorn's worker processes get no other)."""
    return Settings.from_env().header_timeout


class HeadDeadlineProtocol(H11Protocol):
    """The first head is timed from the connection's opening; a later one from its first byte, so that the idle
    time between requests stays uvicorn's keep-alive timeout's to end."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._answered: object = None  # the request last answered while no next one has begun; None: none
        self._arm(None)

    def _arm(self, after: object) -> None:
        """Times the head of the request that follows `after` (None: the connection's first)."""
        self._head_after, self._answered = after, None
        self._head_timer = self.loop.call_later(header_timeout(), self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self._answered is not None:
            self._arm(self._answered)  # the first bytes of the next request
        super().data_received(data)
        if self._head_timer is not None and self.cycle is not self._head_after:
            self._disarm()  # the head is in: from here on the app (and BodyGuard) has the request

    def on_response_complete(self) -> None:
        done = self.cycle
        super().on_response_complete()  # may start a pipelined request whose head is in already
        self._answered = done if self.cycle is done else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.debug("closing a connection that sent no complete request head within %g s", header_timeout())
            self.transport.close()
