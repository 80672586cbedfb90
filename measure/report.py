"""`gptzoo report`: the depth study, regenerated from the store and a fresh speed run.

Writes <out>/depth-study.md and PNG plots beside it: validation loss over training per depth (from train-log.jsonl),
final validation loss vs depth, decode tokens/s and p95 per-token latency vs depth, the Pareto frontiers of validation
loss against decode ms/token and against training time (which variants are worth serving, which worth training), and a
table depth -> params, val loss, tokens/s, export size, frontier, compared with nanoGPT's seed figures.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gptzoo.measure.report_plots import plots
from gptzoo.measure.report_rows import (
    COSTS,
    DepthRow,
    collect,
    finite,
    frontier,
    in_minutes,
    labels,
    pareto_front,
    several_arches,
)
from gptzoo.zoo import atomic
from gptzoo.zoo.store import Store

__all__ = ["DepthRow", "collect", "frontier", "pareto_front", "write_report"]

SEED_FIGURES = (
    "nanoGPT's seed figures: 6 layers / 384 wide reach val 1.47 on a GPU (5000 iters); 4 layers / 128 wide reach ~1.88 "
    "on a CPU in 2000 iters (measured on this machine kind with nanoGPT's train.py: 1.8857)."
)


FRONTIER_TEXT = (
    "A variant is on a frontier when no other variant of its dataset is at least as good on both validation loss and "
    "cost and better on one; the others are dominated: something else is cheaper for the same loss or better for the "
    "same cost. The speed frontier says which variants are worth serving (int8 copies included), the training-time "
    "one which depths are worth training."
)


def _frontier_lines(rows: list[DepthRow], images: list[str]) -> list[str]:
    names = labels(rows)
    minutes = in_minutes(rows)
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
        if not any(finite(x) for x in xs):
            why = ("no speed run (`--no-measure`), or no variant is exported (`gptzoo export --all`)" if key == "speed"
                   else "no variant was trained here (imported ones have no step time)")
            lines.append(f"- {head}: {why}, so no {what} frontier.")
            continue
        on = frontier(rows, cost)
        datasets = list(dict.fromkeys(rows[i].dataset for i in on))
        for ds in datasets:
            pts = ", ".join(f"{names[i]} ({fmt(xs[i])}, {rows[i].val_loss:.4f})" for i in on if rows[i].dataset == ds)
            beaten = [names[i] for i, r in enumerate(rows) if r.dataset == ds and finite(xs[i]) and i not in on]
            text = f"- {head}" + (f", {ds}" if len(datasets) > 1 else "") + f", {verb}: {pts}."
            lines.append(text + (f" Dominated: {', '.join(beaten)}." if beaten else " Nothing is dominated."))
        missing = [names[i] for i, x in enumerate(xs) if not finite(x)]
        if missing:
            why = "not measured" if key == "speed" else "no training time of their own (imported, or int8 copies)"
            lines.append(f"  Left out, {why}: {', '.join(missing)}.")
    lines.append("")
    lines += [f"![{n}]({n})" for n in images if n.startswith("depth-pareto-")]
    return lines + [""]


def _family_lines(rows: list[DepthRow]) -> list[str]:
    """With both block families in the store: each depth trained in both, at one width and dataset, side by side."""
    fp32 = [r for r in rows if not r.quantization]
    if not several_arches(fp32):
        return []
    by: dict[tuple, dict[str, DepthRow]] = {}
    for r in fp32:
        by.setdefault((r.dataset or "", r.n_embd, r.n_layer), {}).setdefault(r.arch, r)
    lines = ["## The block families", "",
             "Each depth trained in both families at one width and dataset (gpt2: nanoGPT's block; oss: docs/oss.md); "
             "a negative difference is the oss block's better loss.", "",
             "| layers | width | gpt2 val loss | oss val loss | oss - gpt2 | gpt2 tokens/s | oss tokens/s | ids |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    pairs = [(k, v) for k, v in sorted(by.items()) if {"gpt2", "oss"} <= set(v)]
    for (_, width, layers), v in pairs:
        g, o = v["gpt2"], v["oss"]
        speed = [f"{r.tok_s:,.0f}" if r.tok_s else "-" for r in (g, o)]
        lines.append(f"| {layers} | {width} | {g.val_loss:.4f} | {o.val_loss:.4f} | {o.val_loss - g.val_loss:+.4f} | "
                     f"{speed[0]} | {speed[1]} | {g.id}, {o.id} |")
    if not pairs:
        lines.append("| - | - | - | - | - | - | - | no depth is trained in both families yet |")
    return lines + [""]


def render(rows: list[DepthRow], images: list[str], threads: int) -> str:
    on = {key: set(frontier(rows, cost)) for key, _, cost in COSTS}
    lines = [
        "# The depth study",
        "",
        f"Regenerated by `gptzoo report` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from the store's variants; speed "
        f"is a 200-token greedy decode on onnxruntime, single stream, {threads} thread(s), on the machine that ran it.",
        "",
        "| layers | width | block | params | val loss | iters | train ms/iter | ONNX MB | tokens/s | p95 ms/token "
        "| frontier | id |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for i, r in enumerate(rows):
        def f(x, fmt):
            return "-" if x is None else format(x, fmt)

        layers = f"{r.n_layer}" + (" int8" if r.quantization else "")
        fronts = ", ".join(what for key, what, _ in COSTS if i in on[key]) or "-"
        lines.append(f"| {layers} | {r.n_embd} | {r.arch_summary} | {r.params:,} | {r.val_loss:.4f} | {r.iterations} | "
                     f"{f(r.train_ms_per_iter, '.1f')} | {f(r.onnx_mb, '.1f')} | {f(r.tok_s, ',.0f')} | "
                     f"{f(r.p95_ms, '.3f')} | {fronts} | {r.id} |")
    lines += [""] + _frontier_lines(rows, images) + _family_lines(rows)
    lines += ["## Against the seed", "", SEED_FIGURES, ""]
    by_width: dict[tuple[str, int], list[DepthRow]] = {}
    for r in rows:
        if not r.quantization:  # the seed's figures are for fp32 depths
            by_width.setdefault((r.arch, r.n_embd), []).append(r)
    arches = several_arches(rows)
    for (arch, width), rs in sorted(by_width.items()):
        best = min(rs, key=lambda r: r.val_loss)
        fastest = max((r for r in rs if r.tok_s), key=lambda r: r.tok_s, default=None)
        whose = f"the {arch} block's" if arches else "the"
        text = f"At width {width}, {whose} best validation loss is {best.val_loss:.4f} ({best.n_layer} layers)"
        four = next((r for r in rs if r.n_layer == 4), None)
        if width == 128 and four:  # the seed's figures are nanoGPT's block's; the oss block's compare with them too
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
