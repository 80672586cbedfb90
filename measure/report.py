"""`gptzoo report`: the depth study, regenerated from the store and a fresh speed run.

Writes <out>/depth-study.md and PNG plots beside it: validation loss over training per depth (from train-log.jsonl),
final validation loss vs depth, decode tokens/s and p95 per-token latency vs depth, the Pareto frontiers of validation
loss against decode ms/token and against training time (which variants are worth serving, which worth training), and a
table depth -> params, val loss, tokens/s, export size, frontier, compared with nanoGPT's seed figures.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gptzoo.zoo import atomic
from gptzoo.zoo.generate import Batch
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.store import TRAIN_LOG, Store, Variant
from gptzoo.zoo.tokenizers import from_spec

SEED_FIGURES = (
    "nanoGPT's seed figures: 6 layers / 384 wide reach val 1.47 on a GPU (5000 iters); 4 layers / 128 wide reach ~1.88 "
    "on a CPU in 2000 iters (measured on this machine kind with nanoGPT's train.py: 1.8857)."
)


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
            v.dataset_name, c.quantization,
        ))
    # an int8 copy right after its source
    return sorted(rows, key=lambda r: (r.n_embd, r.n_layer, r.dataset or "", bool(r.quantization), r.id))


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[int]:
    """Indices of the points on the Pareto frontier, lower being better on both axes, ordered by the first axis.

    A point is on it unless another is at least as good on both axes and better on one: exact ties all stay on it,
    a point matching another on one axis and worse on the other does not. A point missing a figure (None or NaN) is
    left out, neither on the frontier nor held against the others."""
    ok = [i for i, (x, y) in enumerate(points) if _finite(x) and _finite(y)]

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


def labels(rows: Sequence[DepthRow]) -> list[str]:
    """Short point labels: `4L`, `4L int8`; the width when the store holds several, the id when still ambiguous."""
    wide = len({r.n_embd for r in rows}) > 1
    names = [f"{r.n_layer}L" + (f"/{r.n_embd}" if wide else "") + (" int8" if r.quantization else "") for r in rows]
    return [r.id if names.count(n) > 1 else n for r, n in zip(rows, names, strict=True)]


def _log(variant_dir: Path) -> list[dict]:
    path = variant_dir / TRAIN_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plots(store: Store, rows: list[DepthRow], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []

    def save(fig, name):
        with atomic.atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        names.append(name)

    depths = [r for r in rows if not r.quantization]  # an int8 copy is not a depth: only the frontiers show it
    logs = {r.id: _log(store.variant_dir(r.id)) for r in depths}
    if any(logs.values()):  # a store copied without its logs would draw an empty chart
        fig, ax = plt.subplots(figsize=(7, 4.2))
        shapes = [(r.n_layer, r.n_embd) for r in depths]
        for r in depths:
            log = logs[r.id]
            twin = shapes.count((r.n_layer, r.n_embd)) > 1
            label = f"{r.n_layer} layers ({r.n_embd} wide)" + (f" {r.id}" if twin else "")
            if log:
                ax.plot([e["iter"] for e in log], [e["val_loss"] for e in log], marker="o", ms=3, label=label)
        ax.set(xlabel="iteration", ylabel="validation loss", title="Validation loss during training, by depth")
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, "depth-val-curves.png")

    if depths:
        fig, ax = plt.subplots(figsize=(6, 4))
        for width in sorted({r.n_embd for r in depths}):
            rs = [r for r in depths if r.n_embd == width]
            ax.plot([r.n_layer for r in rs], [r.val_loss for r in rs], marker="o", label=f"{width} wide")
        ax.axhline(1.88, ls="--", c="gray", lw=1, label="nanoGPT 4L/128 CPU (1.88)")
        ax.axhline(1.47, ls=":", c="gray", lw=1, label="nanoGPT 6L/384 GPU (1.47)")
        ax.set(xlabel="layers", ylabel="final validation loss", title="Quality vs depth")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "depth-val-loss.png")

    speed = [r for r in depths if r.tok_s]
    if speed:
        fig, ax1 = plt.subplots(figsize=(6, 4))
        ax1.plot([r.n_layer for r in speed], [r.tok_s for r in speed], marker="o", c="tab:blue")
        ax1.set(xlabel="layers", ylabel="decode tokens/s (1 stream, 1 thread)", title="Speed vs depth")
        ax2 = ax1.twinx()
        ax2.plot([r.n_layer for r in speed], [r.p95_ms for r in speed], marker="s", c="tab:red")
        ax2.set_ylabel("p95 per-token latency (ms)", color="tab:red")
        ax1.grid(alpha=0.3)
        save(fig, "depth-speed.png")

    for key, _, cost in COSTS:
        if any(_finite(cost(r)) for r in rows):  # no speed run: no speed frontier (render says why)
            save(_pareto_figure(plt, rows, key, cost), f"depth-pareto-{key}.png")
    return names


def _minutes(rows: Sequence[DepthRow]) -> bool:
    """Training times in minutes once any reaches two, in seconds below (tiny runs)."""
    return max((r.train_seconds or 0) for r in rows) >= 120


def _pareto_figure(plt, rows: list[DepthRow], key: str, cost: Callable[[DepthRow], float | None]):
    minutes = _minutes(rows)
    scale = 60 if key == "training" and minutes else 1
    xs = [cost(r) for r in rows]
    names = labels(rows)
    on = frontier(rows, cost)
    shown = [i for i, x in enumerate(xs) if _finite(x)]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    datasets = list(dict.fromkeys(rows[i].dataset for i in shown))
    for k, ds in enumerate(datasets):
        front = [i for i in on if rows[i].dataset == ds]
        fx, fy = [xs[i] / scale for i in front], [rows[i].val_loss for i in front]
        label = "frontier" + (f" ({ds})" if len(datasets) > 1 else "")
        # the edge of the region the frontier dominates: flat until the next point's cost, then down to its loss
        ax.step(fx, fy, where="post", c=f"C{k}", lw=1.5, label=label)
        ax.scatter(fx, fy, color=f"C{k}", s=45, zorder=3)
    off = [i for i in shown if i not in on]
    if off:
        ax.scatter([xs[i] / scale for i in off], [rows[i].val_loss for i in off], facecolors="none",
                   edgecolors="gray", s=45, zorder=3, label="dominated (another is no worse on both, better on one)")
    for i in shown:
        ax.annotate(names[i], (xs[i] / scale, rows[i].val_loss), textcoords="offset points", xytext=(5, 4),
                    fontsize=8, color="black" if i in on else "gray")
    missing = [names[i] for i in range(len(rows)) if i not in shown]
    if missing:
        why = "not measured" if key == "speed" else "no training time (imported, or an int8 copy)"
        ax.plot([], [], " ", label=f"not shown, {why}: {', '.join(missing)}")
    if key == "speed":
        ax.set(xlabel="decode ms/token (median, 1 stream)", title="Validation loss vs decode speed: the frontier")
    else:
        ax.set(xlabel=f"training time ({'minutes' if minutes else 'seconds'}: steps x median step time)",
               title="Validation loss vs training time: the frontier")
    ax.set_ylabel("validation loss")
    ax.margins(x=0.15, y=0.12)  # room for the labels of the outermost points
    ax.grid(alpha=0.3)
    # under the axes: inside, it would cover the frontier wherever that runs
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    return fig


FRONTIER_TEXT = (
    "A variant is on a frontier when no other variant of its dataset is at least as good on both validation loss and "
    "cost and better on one; the others are dominated: something else is cheaper for the same loss or better for the "
    "same cost. The speed frontier says which variants are worth serving (int8 copies included), the training-time "
    "one which depths are worth training."
)


def _frontier_lines(rows: list[DepthRow], images: list[str]) -> list[str]:
    names = labels(rows)
    minutes = _minutes(rows)
    lines = ["## The frontier: what is worth serving", "", FRONTIER_TEXT, ""]
    for key, what, cost in COSTS:
        xs = [cost(r) for r in rows]
        if key == "speed":
            head, verb = "**ms/token** (decode, median, one stream)", "worth serving"

            def fmt(x):
                return f"{x:.3f} ms"
        else:
            head, verb = "**training time** (steps x median step time)", "worth training"

            def fmt(x):
                return f"{x / 60:.1f} min" if minutes else f"{x:.1f} s"
        if not any(_finite(x) for x in xs):
            why = ("no speed run (`--no-measure`), or no variant is exported (`gptzoo export --all`)" if key == "speed"
                   else "no variant was trained here (imported ones have no step time)")
            lines.append(f"- {head}: {why}, so no {what} frontier.")
            continue
        on = frontier(rows, cost)
        datasets = list(dict.fromkeys(rows[i].dataset for i in on))
        for ds in datasets:
            pts = ", ".join(f"{names[i]} ({fmt(xs[i])}, {rows[i].val_loss:.4f})" for i in on if rows[i].dataset == ds)
            beaten = [names[i] for i, r in enumerate(rows) if r.dataset == ds and _finite(xs[i]) and i not in on]
            text = f"- {head}" + (f", {ds}" if len(datasets) > 1 else "") + f", {verb}: {pts}."
            lines.append(text + (f" Dominated: {', '.join(beaten)}." if beaten else " Nothing is dominated."))
        missing = [names[i] for i, x in enumerate(xs) if not _finite(x)]
        if missing:
            why = "not measured" if key == "speed" else "no training time of their own (imported, or int8 copies)"
            lines.append(f"  Left out, {why}: {', '.join(missing)}.")
    lines.append("")
    lines += [f"![{n}]({n})" for n in images if n.startswith("depth-pareto-")]
    return lines + [""]


def render(rows: list[DepthRow], images: list[str], threads: int) -> str:
    on = {key: set(frontier(rows, cost)) for key, _, cost in COSTS}
    lines = [
        "# The depth study",
        "",
        f"Regenerated by `gptzoo report` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from the store's variants; speed "
        f"is a 200-token greedy decode on onnxruntime, single stream, {threads} thread(s), on the machine that ran it.",
        "",
        "| layers | width | params | val loss | iters | train ms/iter | ONNX MB | tokens/s | p95 ms/token | frontier "
        "| id |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for i, r in enumerate(rows):
        def f(x, fmt):
            return "-" if x is None else format(x, fmt)

        layers = f"{r.n_layer}" + (" int8" if r.quantization else "")
        fronts = ", ".join(what for key, what, _ in COSTS if i in on[key]) or "-"
        lines.append(f"| {layers} | {r.n_embd} | {r.params:,} | {r.val_loss:.4f} | {r.iterations} | "
                     f"{f(r.train_ms_per_iter, '.1f')} | {f(r.onnx_mb, '.1f')} | {f(r.tok_s, ',.0f')} | "
                     f"{f(r.p95_ms, '.3f')} | {fronts} | {r.id} |")
    lines += [""] + _frontier_lines(rows, images)
    lines += ["## Against the seed", "", SEED_FIGURES, ""]
    by_width: dict[int, list[DepthRow]] = {}
    for r in rows:
        if not r.quantization:  # the seed's figures are for fp32 depths
            by_width.setdefault(r.n_embd, []).append(r)
    for width, rs in sorted(by_width.items()):
        best = min(rs, key=lambda r: r.val_loss)
        fastest = max((r for r in rs if r.tok_s), key=lambda r: r.tok_s, default=None)
        text = f"At width {width}, the best validation loss is {best.val_loss:.4f} ({best.n_layer} layers)"
        four = next((r for r in rs if r.n_layer == 4), None)
        if width == 128 and four:
            text += f"; 4 layers reach {four.val_loss:.4f} against the seed's 1.88"
        six = next((r for r in rs if r.n_layer == 6), None)
        if width == 384 and six:
            text += f"; 6 layers reach {six.val_loss:.4f} against the seed's 1.47"
        if fastest:
            text += (f". The fastest to answer is {fastest.n_layer} layer(s) at {fastest.tok_s:,.0f} tokens/s, "
                     f"{fastest.val_loss - best.val_loss:+.3f} in loss from the best")
        lines += [text + ".", ""]
    if "depth-val-curves.png" not in images:
        lines += ["No training logs (train-log.jsonl) in the store, so no val-loss curves.", ""]
    lines += [f"![{n}]({n})" for n in images if not n.startswith("depth-pareto-")]
    return "\n".join(lines) + "\n"


def write_report(store: Store, out: Path, measure: bool = True, threads: int = 1) -> Path:
    rows = collect(store, measure, threads)
    if not rows:
        from gptzoo.zoo.store import StoreError

        raise StoreError(f"no variants in {store.root} to report on (train some with `gptzoo train --all`)")
    out.mkdir(parents=True, exist_ok=True)
    images = plots(store, rows, out)
    target = out / "depth-study.md"
    atomic.write_bytes(target, render(rows, images, threads).encode())
    return target
