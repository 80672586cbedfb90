"""`gptzoo report`: the depth study, regenerated from the store and a fresh speed run.

Writes <out>/depth-study.md and PNG plots beside it: validation loss over training per depth (from train-log.jsonl),
final validation loss vs depth, decode tokens/s and p95 per-token latency vs depth, and a table depth -> params,
val loss, tokens/s, export size, compared with nanoGPT's seed figures.
"""

from __future__ import annotations

import json
import statistics
import time
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
        if v.card.quantization or v.card.val_loss is None:
            continue  # int8 copies are not depths; an import with --no-eval has no figure to plot
        c = v.card
        lat = token_latencies(v, threads=threads) if (measure and v.exported) else None
        rows.append(DepthRow(
            v.id, v.n_layer, c.n_embd, c.params, c.val_loss, c.iterations or 0, c.ms_per_iter,
            c.onnx.bytes / 1e6 if v.exported and c.onnx and c.onnx.bytes else None,
            1 / statistics.median(lat) if lat else None,
            float(np.percentile(lat, 95)) * 1000 if lat else None,
        ))
    return sorted(rows, key=lambda r: (r.n_embd, r.n_layer))


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

    fig, ax = plt.subplots(figsize=(7, 4.2))
    shapes = [(r.n_layer, r.n_embd) for r in rows]
    for r in rows:
        log = _log(store.variant_dir(r.id))
        twin = shapes.count((r.n_layer, r.n_embd)) > 1
        label = f"{r.n_layer} layers ({r.n_embd} wide)" + (f" {r.id}" if twin else "")
        if log:
            ax.plot([e["iter"] for e in log], [e["val_loss"] for e in log], marker="o", ms=3, label=label)
    ax.set(xlabel="iteration", ylabel="validation loss", title="Validation loss during training, by depth")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, "depth-val-curves.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for width in sorted({r.n_embd for r in rows}):
        rs = [r for r in rows if r.n_embd == width]
        ax.plot([r.n_layer for r in rs], [r.val_loss for r in rs], marker="o", label=f"{width} wide")
    ax.axhline(1.88, ls="--", c="gray", lw=1, label="nanoGPT 4L/128 CPU (1.88)")
    ax.axhline(1.47, ls=":", c="gray", lw=1, label="nanoGPT 6L/384 GPU (1.47)")
    ax.set(xlabel="layers", ylabel="final validation loss", title="Quality vs depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "depth-val-loss.png")

    speed = [r for r in rows if r.tok_s]
    if speed:
        fig, ax1 = plt.subplots(figsize=(6, 4))
        ax1.plot([r.n_layer for r in speed], [r.tok_s for r in speed], marker="o", c="tab:blue")
        ax1.set(xlabel="layers", ylabel="decode tokens/s (1 stream, 1 thread)", title="Speed vs depth")
        ax2 = ax1.twinx()
        ax2.plot([r.n_layer for r in speed], [r.p95_ms for r in speed], marker="s", c="tab:red")
        ax2.set_ylabel("p95 per-token latency (ms)", color="tab:red")
        ax1.grid(alpha=0.3)
        save(fig, "depth-speed.png")
    return names


def render(rows: list[DepthRow], images: list[str], threads: int) -> str:
    lines = [
        "# The depth study",
        "",
        f"Regenerated by `gptzoo report` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from the store's variants; speed "
        f"is a 200-token greedy decode on onnxruntime, single stream, {threads} thread(s), on the machine that ran it.",
        "",
        "| layers | width | params | val loss | iters | train ms/iter | ONNX MB | tokens/s | p95 ms/token | id |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        def f(x, fmt):
            return "-" if x is None else format(x, fmt)

        lines.append(f"| {r.n_layer} | {r.n_embd} | {r.params:,} | {r.val_loss:.4f} | {r.iterations} | "
                     f"{f(r.train_ms_per_iter, '.1f')} | {f(r.onnx_mb, '.1f')} | {f(r.tok_s, ',.0f')} | "
                     f"{f(r.p95_ms, '.3f')} | {r.id} |")
    lines += ["", "## Against the seed", "", SEED_FIGURES, ""]
    by_width: dict[int, list[DepthRow]] = {}
    for r in rows:
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
    lines += [f"![{n}]({n})" for n in images]
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
