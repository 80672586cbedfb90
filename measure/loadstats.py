"""The statistics of a load test: percentiles, the run's summary (counts, throughput, latency distributions, errors),
the latency budget's verdicts and goodput, and which variants served."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from gptzoo.measure.loadclient import ERROR_KINDS, RequestResult

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default); None when
    there are no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def distribution_ms(values_s: Sequence[float]) -> dict:
    """n, mean, p50/p95/p99 and max of seconds, in milliseconds (None when empty)."""
    out: dict = {"n": len(values_s)}
    ms = [v * 1000 for v in values_s]
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(ms, q)
    out["mean"] = sum(ms) / len(ms) if ms else None
    out["max"] = max(ms) if ms else None
    return out


def tokens_source(results: Sequence[RequestResult]) -> str | None:
    """Where a run's completion tokens came from: "usage" (exact), "chunks" (the server sent no usage: text chunks
    counted, which is not a token count), "none" (plain answers without usage: 0 counted), "mixed", or None when no
    request succeeded."""
    sources = {r.tokens_from for r in results if r.ok}
    return None if not sources else sources.pop() if len(sources) == 1 else "mixed"


def summarize(results: Sequence[RequestResult], wall_s: float) -> dict:
    """The report of a run: counts, throughput, latency distributions (ms, successful requests only) and errors.
    `tokens_from` says how completion tokens were counted; `text_chunks` is the streamed chunks received, for
    comparison (ITL percentiles are gaps between those chunks)."""
    ok = [r for r in results if r.ok]
    tokens = sum(r.tokens for r in ok)
    errors = Counter(r.error for r in results if not r.ok)
    examples: dict[str, str] = {}
    for r in results:
        if not r.ok and r.error not in examples:
            examples[r.error] = (r.message or "")[:300]
    statuses = Counter(str(r.status) for r in results if r.status is not None)
    return {
        "requests": {"total": len(results), "ok": len(ok), "failed": len(results) - len(ok)},
        "wall_s": wall_s,
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else 0.0,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / wall_s if wall_s > 0 else 0.0,
        "tokens_from": tokens_source(ok),
        "text_chunks": sum(r.chunks for r in ok),
        "ttft_ms": distribution_ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "itl_ms": distribution_ms([g for r in ok for g in r.itl_s]),
        "e2e_ms": distribution_ms([r.e2e_s for r in ok]),
        "errors": {k: errors.get(k, 0) for k in ERROR_KINDS},
        "error_examples": examples,
        "status_codes": dict(sorted(statuses.items())),
        "reconnected": sum(r.reconnected for r in results),  # sent again: the server closed a kept-alive connection
    }


@dataclass(frozen=True)
class ClientBudget:
    """The run's latency budget in ms, judged on what the client measured."""

    tpot_ms: float | None
    ttft_ms: float | None

    @property
    def set(self) -> bool:
        return self.tpot_ms is not None or self.ttft_ms is not None

    def met(self, r: RequestResult) -> bool:
        """A successful request whose TTFT and mean time per output token stayed within the budget; a plain
        (not streamed) answer has no TTFT, so its end-to-end time stands for it."""
        if not r.ok:
            return False
        ttft = r.ttft_s if r.ttft_s is not None else r.e2e_s
        if self.ttft_ms is not None and ttft * 1e3 > self.ttft_ms:
            return False
        tpot = r.tpot_s
        return self.tpot_ms is None or tpot is None or tpot * 1e3 <= self.tpot_ms


def client_budget_summary(results: Sequence[RequestResult], wall_s: float, budget: ClientBudget) -> dict:
    """Requests within the budget (of all sent, failures count as missed) and goodput: those per second."""
    within = sum(budget.met(r) for r in results)
    return {"tpot_ms": budget.tpot_ms, "ttft_ms": budget.ttft_ms, "within": within,
            "within_share": within / len(results) if results else None,
            "goodput_per_s": within / wall_s if wall_s > 0 else 0.0,
            "tpot_ms_client": distribution_ms([t for r in results if r.ok and (t := r.tpot_s) is not None])}


def served(results: Sequence[RequestResult], val_losses: dict[str, float], budget: ClientBudget | None = None) -> dict:
    """Successful requests by the variant that served them (with its route reasons, when the server says, and how
    many stayed within the budget, when there is one), and the mean validation loss of those variants over the
    requests (None when a variant's loss is unknown)."""
    by: dict[str, dict] = {}
    for r in results:
        if r.ok and r.model:
            m = by.setdefault(r.model, {"requests": 0, "val_loss": val_losses.get(r.model), "routes": Counter()}
                              | ({"within": 0} if budget else {}))
            m["requests"] += 1
            if budget:
                m["within"] += budget.met(r)
            if r.route:
                m["routes"][r.route] += 1
    n = sum(m["requests"] for m in by.values())
    known = all(m["val_loss"] is not None for m in by.values())
    mean = sum(m["val_loss"] * m["requests"] for m in by.values()) / n if n and known else None
    return {"models": {k: v | {"routes": dict(v["routes"])} for k, v in sorted(by.items())},
            "mean_val_loss": mean}
