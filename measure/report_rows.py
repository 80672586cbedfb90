"""The rows of `gptzoo report` (gptzoo.measure.report): one per variant of either block family, with its measured
speed, and the Pareto frontiers over them."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptzoo.zoo.generate import Batch
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.store import TRAIN_LOG, Store, Variant
from gptzoo.zoo.tokenizers import from_spec


@dataclass
class DepthRow:
    id: str
    n_layer: int
    n_embd: int
    params: int
    val_loss: float
    iterations: int
    train_ms_per_iter: float | None
    onnx_mb: float | None
    tok_s: float | None  # single-stream decode on onnxruntime
    p95_ms: float | None  # p95 per-token latency of that decode
    dataset: str | None = None  # losses compare only within one dataset (one family)
    quantization: str | None = None  # int8-dynamic for a `<id>-int8` copy
    arch: str = "gpt2"  # the block family (docs/oss.md): the depth plots draw one series per family
    arch_summary: str = "gpt2"  # the family and its settings in short (Card.arch_summary), for the table

    @property
    def ms_per_token(self) -> float | None:
        """Median per-token decode time: tok_s is 1 / the median latency."""
        return 1000 / self.tok_s if self.tok_s else None

    @property
    def train_seconds(self) -> float | None:
        """Steps x median step time: the cost of the training itself, without its evaluations (which depend on the
        eval settings, not the depth). None for a variant not trained here (an import) and for an int8 copy, which
        costs its source's training and would only sit on top of it."""
        if self.quantization or not (self.train_ms_per_iter and self.iterations):
            return None
        return self.iterations * self.train_ms_per_iter / 1000


def token_latencies(variant: Variant, n_tokens: int = 200, threads: int = 1) -> list[float]:
    """Per-token wall times (seconds) of one greedy single-stream generation on onnxruntime."""
    model = OnnxModel(variant.path("model.onnx"), threads=threads)
    tok = from_spec(variant.card.tokenizer)
    batch = Batch(model, tok, policy="half", slots=1)
    prompt = [0] * min(8, model.shape.block_size)
    row = batch.new_row(prompt, SamplingParams(max_tokens=n_tokens + 1, temperature=0.0))
    batch.add([row])
    times = []
    while not row.done:
        t0 = time.perf_counter()
        batch.step()
        times.append(time.perf_counter() - t0)
    return times


def collect(store: Store, measure: bool = True, threads: int = 1) -> list[DepthRow]:
    rows = []
    for v in store.variants():
        if v.card.val_loss is None:
            continue  # an import with --no-eval has no figure to plot
        c = v.card
        lat = token_latencies(v, threads=threads) if (measure and v.exported) else None
        rows.append(DepthRow(
            v.id, v.n_layer, c.n_embd, c.params, c.val_loss, c.iterations or 0, c.ms_per_iter,
            c.onnx.bytes / 1e6 if v.exported and c.onnx and c.onnx.bytes else None,
            1 / statistics.median(lat) if lat else None,
            float(np.percentile(lat, 95)) * 1000 if lat else None,
            v.dataset_name, c.quantization, c.arch, c.arch_summary,
        ))
    # an int8 copy right after its source; gpt2 before oss at each depth
    return sorted(rows, key=lambda r: (r.n_embd, r.n_layer, r.dataset or "", r.arch, bool(r.quantization), r.id))


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[int]:
    """Indices of the points on the Pareto frontier, lower being better on both axes, ordered by the first axis.

    A point is on it unless another is at least as good on both axes and better on one: exact ties all stay on it,
    a point matching another on one axis and worse on the other does not. A point missing a figure (None or NaN) is
    left out, neither on the frontier nor held against the others."""
    ok = [i for i, (x, y) in enumerate(points) if finite(x) and finite(y)]

    def beaten(i: int) -> bool:
        (x, y) = points[i]
        return any(points[j][0] <= x and points[j][1] <= y and points[j] != points[i] for j in ok)

    return sorted((i for i in ok if not beaten(i)), key=lambda i: (points[i][0], points[i][1], i))


# The two costs the frontier is drawn against: (key, what the markdown calls it, the cost of a row)
COSTS: list[tuple[str, str, Callable[[DepthRow], float | None]]] = [
    ("speed", "ms/token", lambda r: r.ms_per_token),
    ("training", "training time", lambda r: r.train_seconds),
]


def frontier(rows: Sequence[DepthRow], cost: Callable[[DepthRow], float | None]) -> list[int]:
    """Indices into `rows` on the loss-vs-`cost` frontier, per dataset (a char-level loss and a BPE loss do not
    compare), each dataset's ordered by cost."""
    out: list[int] = []
    for ds in dict.fromkeys(r.dataset for r in rows):
        idx = [i for i, r in enumerate(rows) if r.dataset == ds]
        out += [idx[k] for k in pareto_front([(cost(rows[i]), rows[i].val_loss) for i in idx])]
    return out


def several_arches(rows: Sequence[DepthRow]) -> bool:
    return len({r.arch for r in rows}) > 1


def labels(rows: Sequence[DepthRow]) -> list[str]:
    """Short point labels: `4L`, `4L int8`; the width when the store holds several, the block family when it holds
    both (`4L oss`), the id when still ambiguous."""
    wide, arches = len({r.n_embd for r in rows}) > 1, several_arches(rows)
    names = [f"{r.n_layer}L" + (f"/{r.n_embd}" if wide else "") + (f" {r.arch}" if arches else "")
             + (" int8" if r.quantization else "") for r in rows]
    return [r.id if names.count(n) > 1 else n for r, n in zip(rows, names, strict=True)]


def train_log(variant_dir: Path) -> list[dict]:
    path = variant_dir / TRAIN_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def in_minutes(rows: Sequence[DepthRow]) -> bool:
    """Training times in minutes once any reaches two, in seconds below (tiny runs)."""
    return max((r.train_seconds or 0) for r in rows) >= 120


MARKERS = {"gpt2": "o", "oss": "^"}  # each block family's marker on every plot


def depth_series(rows: Sequence[DepthRow]) -> list[tuple[str, list[DepthRow]]]:
    """The lines of a plot against depth: one per block family and width, each by depth; named by the width, and by
    the family when the rows hold both (`oss, 128 wide`)."""
    arches = several_arches(rows)
    out = []
    for arch in sorted({r.arch for r in rows}):
        for width in sorted({r.n_embd for r in rows if r.arch == arch}):
            rs = sorted((r for r in rows if r.arch == arch and r.n_embd == width), key=lambda r: r.n_layer)
            out.append(((f"{arch}, " if arches else "") + f"{width} wide", rs))
    return out
