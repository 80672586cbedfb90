"""Server fixtures: apps on the tiny exported variant (TestClient inside `with`, so the lifespan loads the model),
broken copies of it, a gate on the worker's decode steps, and `gptzoo serve` as a real subprocess on a loopback
port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gptzoo.server.app import create_app
from gptzoo.server.settings import Settings
from gptzoo.zoo.generate import Batch

MODEL = "shakespeare-char-2l"
TEST_HOST = "testserver.local"  # the name TestClient sends as Host: one of the server's names in these tests


@pytest.fixture
def make_client():
    """make_client(store, **settings) -> a started TestClient; every one is closed after the test."""
    opened = []

    def make(store: Path, **settings) -> TestClient:
        settings.setdefault("allowed_hosts", [TEST_HOST])
        client = TestClient(app=create_app(Settings.build(store=str(store), **settings)))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client, exported_store):
    return make_client(exported_store, max_tokens=64, max_prompt_tokens=100, max_body_bytes=20_000, threads=1)


class StepGate:
    """Holds every decode step (`Batch.step`) while shut. The tiny model decodes thousands of tokens a second, so
    whether a request is still running, or a queue still unswept, when the test makes its next move would otherwise
    depend on how busy the machine is; behind the shut gate the worker stays where it is (the row admitted and
    prefilled, no queue sweep, no admission) until the test opens it."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._shut = False
        self._held = 0  # steps waiting at the gate now

    @contextmanager
    def shut(self):
        with self._cv:
            self._shut = True
        try:
            yield self
        finally:  # also when the test fails: nothing may stay stuck behind the gate
            with self._cv:
                self._shut = False
                self._cv.notify_all()

    def wait_held(self, timeout: float = 30) -> None:
        """Returns once a decode step waits at the (shut) gate."""
        with self._cv:
            assert self._cv.wait_for(lambda: self._held > 0, timeout), "no decode step reached the gate"

    def passage(self) -> None:
        with self._cv:
            if self._shut:
                self._held += 1
                self._cv.notify_all()
                self._cv.wait_for(lambda: not self._shut)
                self._held -= 1


@pytest.fixture
def step_gate(monkeypatch) -> StepGate:
    """A StepGate on every Batch of this test (the warm-up step of a client started while it is open passes)."""
    gate, step = StepGate(), Batch.step

    def gated(self, *args):
        gate.passage()
        return step(self, *args)

    monkeypatch.setattr(Batch, "step", gated)
    return gate


def add_variant(store: Path, new_id: str, n_layer: int, src: str = MODEL, edit=None) -> Path:
    """Copy a variant under a new id and depth (optionally editing its card); returns its folder."""
    dst = store / new_id
    shutil.copytree(store / src, dst)
    card = json.loads((dst / "card.json").read_text())
    card.update(id=new_id, n_layer=n_layer)
    if edit:
        edit(card)
    (dst / "card.json").write_text(json.dumps(card))
    return dst


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in a Prometheus scrape (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def sse_events(body: str) -> list[str]:
    """The `data:` payloads of a Server-Sent Events body, in order."""
    return [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gptzoo(*args) -> list[str]:
    return [sys.executable, "-m", "gptzoo.cli.main", *map(str, args)]


@contextmanager
def server_process(tmp_path: Path, store: Path, *flags, env: dict | None = None, startup_s: float = 60,
                   cli: list | None = None):
    """`gptzoo serve` on a free loopback port, ready to answer; yields (process, base_url, log_path) and kills the
    process afterwards if it still runs (stopping it is the test's business)."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with open(log, "w") as out:
        # `cli`: another installation's `gptzoo` (the test of a torch-free install); default this checkout's
        proc = subprocess.Popen([*(cli or gptzoo()), *map(str, ("serve", "--store", store, "--port", port,
                                                                "--threads", 1, *flags))],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            assert proc.poll() is None, f"gptzoo serve exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"gptzoo serve not ready after {startup_s}s:\n{log.read_text()}"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield proc, base, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def live_server(tmp_path: Path, store: Path, *flags, env: dict | None = None, startup_s: float = 60):
    """`gptzoo serve` on a free loopback port, ready to answer; stopped with Ctrl-C (SIGINT) afterwards. Yields
    (base_url, log_path)."""
    with server_process(tmp_path, store, *flags, env=env, startup_s=startup_s) as (proc, base, log):
        try:
            yield base, log
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)  # a TimeoutExpired here: server_process kills it
    assert proc.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()
