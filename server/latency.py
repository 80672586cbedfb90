"""A model's live latency: what time per output token and time to first token a request arriving now would get.

Every decoding row of a batch gets one token per engine step, so a request's time per output token is the interval
between its worker's steps, and that grows with the rows in the batch (and with whatever else shares the cores: other
models' workers, the event loop). `TokenTime` fits interval ≈ a + b·rows over the worker's recent steps, weighted by
recency, so the prediction follows the load as it is now rather than a benchmark figure. Two points measured at load
(one row, a full batch) are a weak prior: they decide only while nothing recent is known, as for a model that has been
idle for a while.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

HALF_LIFE_S = 2.0  # a step this long ago weighs half as much as one now
PRIOR_WEIGHT = 2.0  # the two calibration points together weigh as much as this many recent steps


@dataclass(frozen=True)
class Budget:
    """A request's latency limits in seconds (None: no limit)."""

    tpot: float | None = None  # mean time per output token
    ttft: float | None = None  # time to first token

    def __bool__(self) -> bool:
        return self.tpot is not None or self.ttft is not None

    def met(self, tpot: float | None, ttft: float) -> bool:
        """Whether a served request stayed within the budget (`tpot` None: it had a single token)."""
        return (self.ttft is None or ttft <= self.ttft) and (self.tpot is None or tpot is None or tpot <= self.tpot)


class TokenTime:
    """Seconds per output token as a function of batch occupancy, learnt from the worker's decode steps.

    The worker thread calls `observe`; event-loop code calls `predict`. A lock keeps the running sums consistent
    (both sides touch them for a few microseconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._w = self._n = self._nn = self._t = self._nt = 0.0  # decayed sums: weight, rows, rows², seconds, rows·s
        self._at = 0.0  # perf_counter time of the last observation
        self._prior = (0.0, 0.0, 0.0, 0.0, 0.0)
        self._prior_line = (math.nan, 0.0)  # (a, b) through the calibration alone
        self._prefill = math.nan  # seconds per prompt token fed, recent average
        self._queue = 0.0  # seconds a request waited for a slot lately, when it had to wait
        self._slow, self._slow_at = 1.0, 0.0  # recent step time ÷ the calibration's at the same rows (contention)

    def calibrate(self, one_row_s: float | Sequence[float], full_s: float | Sequence[float], rows: int) -> None:
        """The prior: a step's time at one row and at `rows` rows, measured when the model loaded; with several
        measurements of each, the fastest. The prior stands for the model alone, and whatever shares the machine
        (other models loading beside it at start) only ever adds time to a step, so the fastest of a few is the
        estimate that a busy moment cannot skew."""
        one_row_s, full_s = (t if isinstance(t, float | int) else min(t) for t in (one_row_s, full_s))
        pts = [(1, one_row_s), (rows, full_s)] if rows > 1 else [(1, one_row_s)]
        w = PRIOR_WEIGHT / len(pts)
        self._prior = (w * len(pts), w * sum(n for n, _ in pts), w * sum(n * n for n, _ in pts),
                       w * sum(t for _, t in pts), w * sum(n * t for n, t in pts))
        pw, pn, pnn, pt, pnt = self._prior
        var = pw * pnn - pn * pn
        b = max(0.0, (pw * pnt - pn * pt) / var) if var > 0 else 0.0
        self._prior_line = ((pt - b * pn) / pw, b)

    def observe(self, rows: int, seconds: float, now: float) -> None:
        """One decode step's interval (the time since the previous step ended) with `rows` decoding rows."""
        with self._lock:
            f = 0.5 ** ((now - self._at) / HALF_LIFE_S) if self._at else 0.0
            self._w = self._w * f + 1
            self._n = self._n * f + rows
            self._nn = self._nn * f + rows * rows
            self._t = self._t * f + seconds
            self._nt = self._nt * f + rows * seconds
            self._at = now
        if (alone := self.prior_tpot(rows)) > 0:
            self._slow, self._slow_at = 0.9 * self.slowdown(now) + 0.1 * seconds / alone, now

    def slowdown(self, now: float) -> float:
        """How much slower than alone this model's steps ran lately: what sharing the machine costs it now. Fades
        back to 1 (alone) with the same half-life as the steps."""
        f = 0.5 ** ((now - self._slow_at) / HALF_LIFE_S) if self._slow_at else 0.0
        return 1.0 + (self._slow - 1.0) * f

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        if tokens:
            per = seconds / tokens
            self._prefill = per if math.isnan(self._prefill) else 0.8 * self._prefill + 0.2 * per

    def observe_queue(self, seconds: float) -> None:
        """A request admitted after waiting `seconds` for a slot (only called for requests that found none free)."""
        self._queue = 0.8 * self._queue + 0.2 * seconds

    def coefficients(self, now: float) -> tuple[float, float]:
        """(a, b) of interval ≈ a + b·rows; (nan, nan) before any calibration or step."""
        with self._lock:
            f = 0.5 ** ((now - self._at) / HALF_LIFE_S) if self._at else 0.0
            live = (self._w * f, self._n * f, self._nn * f, self._t * f, self._nt * f)
        w, n, nn, t, nt = (x + p for x, p in zip(live, self._prior, strict=True))
        if w <= 0:
            return math.nan, math.nan
        lw, ln, lnn = live[:3]
        # steps that all had about the same rows say nothing about the slope: then it comes from the prior alone
        if not (lw * lnn - ln * ln > 0.25 * lw * lw and (b := (w * nt - n * t) / (w * nn - n * n)) >= 0):
            b = self._prior_line[1]
        return (t - b * n) / w, b

    def prior_tpot(self, rows: int) -> float:
        """The calibration's time per token at `rows` rows (the model alone, at load); nan before calibration."""
        a, b = self._prior_line
        return a + b * rows

    def tpot(self, rows: int, now: float) -> float:
        """Predicted seconds per output token at `rows` decoding rows (nan when nothing is known yet)."""
        a, b = self.coefficients(now)
        return max(a + b * rows, 1e-6) if not math.isnan(a) else math.nan

    def ttft(self, prompt_tokens: int, must_wait: bool, tpot: float) -> float:
        """Predicted seconds to the first token: the wait for a slot (when the batch is full), the prompt's prefill,
        one step (`tpot`, the predicted time per token)."""
        prefill = 0.0 if math.isnan(self._prefill) else self._prefill * prompt_tokens
        return (self._queue if must_wait else 0.0) + prefill + tpot
