"""Connections that never finish a request's head are closed (issue 22): uvicorn timed neither a connection that
never sends nor one that trickles its headers, so each held a socket for as long as its client liked."""

import socket
import time

import pytest

from tests.server.conftest import live_server


def closed_by_server(s: socket.socket, deadline_s: float = 60, trickle: bytes = b"") -> bytes:
    """Reads until the server closes the connection (sending `trickle` a byte at a time meanwhile, if any); fails if
    it is still open after `deadline_s`. Returns what the server sent."""
    got, deadline = b"", time.monotonic() + deadline_s
    s.settimeout(0.1)
    while True:
        assert time.monotonic() < deadline, f"the connection is still open after {deadline_s} s"
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            if trickle:
                s.sendall(trickle[:1])
                trickle = trickle[1:] or trickle  # the same byte again once the head is used up: never complete
            continue
        except ConnectionError:
            return got
        if not chunk:
            return got
        got += chunk


@pytest.mark.slow
def test_connections_that_never_send_a_whole_head_are_closed_and_others_are_served(tmp_path, exported_store):
    with live_server(tmp_path, exported_store, "--header-timeout", 1) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as idle:
            assert closed_by_server(idle) == b""
        with socket.create_connection(("127.0.0.1", port)) as slow:
            closed_by_server(slow, trickle=b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000)
        with socket.create_connection(("127.0.0.1", port)) as later:  # a second request's head is timed too
            later.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = b""
            while b'{"status":"ok"}' not in first:
                first += later.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            assert closed_by_server(later, trickle=b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000) == b""
        # a client that takes its time between requests but sends each head at once is served every time
        with socket.create_connection(("127.0.0.1", port)) as keep:
            for _ in range(3):
                keep.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                reply = b""
                while b'{"status":"ok"}' not in reply:
                    chunk = keep.recv(65536)
                    assert chunk, "closed while a request was answered"
                    reply += chunk
                assert reply.startswith(b"HTTP/1.1 200")
