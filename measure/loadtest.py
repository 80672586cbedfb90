"""A load generator for an OpenAI-style `/v1/completions` endpoint: N concurrent clients (asyncio + aiohttp), each
sending one request after the other, for a number of requests and/or a duration; the report of the run.

The parts: the options and their limits (gptzoo.measure.loadconfig), one request and how it is measured
(gptzoo.measure.loadclient), the statistics (gptzoo.measure.loadstats); this module runs the clients.

    report = run(LoadConfig(url="http://127.0.0.1:8000", model="4l", concurrency=8, requests=100))
    print(report.to_dict())
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gptzoo.measure.loadclient import DRAIN_S, RequestResult, one_request, probe, reuse_trace
from gptzoo.measure.loadconfig import (
    MAX_CONCURRENCY,
    MAX_DURATION_S,
    MAX_REQUESTS,
    LoadConfig,
    LoadTestError,
    RemoteNotAllowed,
    check_url,
)
from gptzoo.measure.loadstats import ClientBudget, client_budget_summary, served, summarize

if TYPE_CHECKING:  # imported where used: the CLI reads the limits without the `serve` extra
    import aiohttp

__all__ = ["DRAIN_S", "MAX_CONCURRENCY", "MAX_DURATION_S", "MAX_REQUESTS", "LoadConfig", "LoadTestError",
           "RemoteNotAllowed", "Report", "check_url", "run", "run_async"]


@dataclass
class Report:
    config: LoadConfig
    wall_s: float
    results: list[RequestResult]
    server_models: list[str] | None = None  # ids and aliases /v1/models listed, when it answered
    client_cpus: list[int] | None = None  # the CPUs the load generator could run on (None: unknown on this OS)
    val_losses: dict[str, float] = field(default_factory=dict)  # each listed variant's val_loss

    def to_dict(self) -> dict:
        budget = ClientBudget(self.config.max_tpot_ms, self.config.max_ttft_ms)
        return summarize(self.results, self.wall_s) | {
            "served": served(self.results, self.val_losses, budget if budget.set else None),
            "budget": client_budget_summary(self.results, self.wall_s, budget) if budget.set else None,
            "client_cpus": self.client_cpus, "config": _config_dict(self.config)}


def _config_dict(cfg: LoadConfig) -> dict:
    return {"url": cfg.url, "model": cfg.model, "concurrency": cfg.concurrency, "requests": cfg.requests,
            "duration_s": cfg.duration, "max_tokens": cfg.max_tokens, "prompt": cfg.prompt,
            "temperature": cfg.temperature, "seed": cfg.seed, "stream": cfg.stream, "timeout_s": cfg.timeout,
            "max_tpot_ms": cfg.max_tpot_ms, "max_ttft_ms": cfg.max_ttft_ms, "fallback": cfg.fallback}


def _client(cfg: LoadConfig) -> aiohttp.ClientSession:
    """One session for the probe and every client: a pool of concurrency + 1 keep-alive connections (+1 for the
    probe), no proxy from the environment, no timeout of its own (each request runs under asyncio.timeout); its trace
    tells a request that failed on a connection the server had closed to go again (gptzoo.measure.loadclient)."""
    try:
        import aiohttp
    except ModuleNotFoundError as e:
        if e.name != "aiohttp":
            raise
        raise LoadTestError("`gptzoo loadtest` needs aiohttp, which is not installed: pip install 'gptzoo[serve]'") \
            from None

    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else None
    n = cfg.concurrency + 1  # +1 for the probe
    connector = aiohttp.TCPConnector(limit=n, limit_per_host=0, force_close=False)
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(),
                                 trust_env=False, raise_for_status=False, trace_configs=[reuse_trace()])


async def run_async(cfg: LoadConfig, on_result: Callable[[RequestResult], None] | None = None) -> Report:
    """Probes the server, then runs `cfg.concurrency` clients until `cfg.requests` requests were sent or
    `cfg.duration` elapsed (in-flight requests finish, each within its timeout)."""
    cfg = cfg.validated()
    assert cfg.requests is not None
    async with _client(cfg) as client:
        models, losses = await probe(client, cfg)
        results: list[RequestResult] = []
        issued = 0
        start = time.perf_counter()
        deadline = start + min(cfg.duration or MAX_DURATION_S, MAX_DURATION_S)

        async def worker() -> None:
            nonlocal issued
            while issued < cfg.requests and time.perf_counter() < deadline:
                index = issued
                issued += 1
                result, backoff = await one_request(client, cfg, index, DRAIN_S)  # read each time: runs may change it
                results.append(result)
                if on_result:
                    on_result(result)
                if backoff:
                    await asyncio.sleep(min(backoff, max(0.0, deadline - time.perf_counter())))

        await asyncio.gather(*(worker() for _ in range(min(cfg.concurrency, cfg.requests))))
        wall = time.perf_counter() - start
    return Report(cfg, wall, results, models, _client_cpus(), losses)


def _client_cpus() -> list[int] | None:
    """Recorded in the report so a run says whether it shared the server's cores (see gptzoo.measure.pinning)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def run(cfg: LoadConfig, on_result: Callable[[RequestResult], None] | None = None) -> Report:
    """On uvloop where it is installed: the client's own loop then takes less of its core, and a pinned run measures
    the server rather than the client."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_async(cfg, on_result))
    return uvloop.run(run_async(cfg, on_result))
