"""The PNG plots of `gptzoo report` (gptzoo.measure.report): one series per block family and width on the depth
plots, both families on the Pareto frontiers (each family its own marker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gptzoo.measure.report_rows import (
    COSTS,
    MARKERS,
    DepthRow,
    depth_series,
    finite,
    frontier,
    in_minutes,
    labels,
    several_arches,
    train_log,
)
from gptzoo.zoo import atomic
from gptzoo.zoo.store import Store


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
    logs = {r.id: train_log(store.variant_dir(r.id)) for r in depths}
    if any(logs.values()):  # a store copied without its logs would draw an empty chart
        fig, ax = plt.subplots(figsize=(7, 4.2))
        shapes = [(r.n_layer, r.n_embd, r.arch) for r in depths]
        arches = several_arches(depths)
        for r in depths:
            log = logs[r.id]
            twin = shapes.count((r.n_layer, r.n_embd, r.arch)) > 1
            label = (f"{r.n_layer} layers ({r.n_embd} wide" + (f", {r.arch}" if arches else "") + ")"
                     + (f" {r.id}" if twin else ""))
            if log:
                ax.plot([e["iter"] for e in log], [e["val_loss"] for e in log], marker=MARKERS.get(r.arch, "o"),
                        ms=3, label=label)
        ax.set(xlabel="iteration", ylabel="validation loss", title="Validation loss during training, by depth")
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, "depth-val-curves.png")

    if depths:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, rs in depth_series(depths):
            ax.plot([r.n_layer for r in rs], [r.val_loss for r in rs], marker=MARKERS.get(rs[0].arch, "o"), label=name)
        ax.axhline(1.88, ls="--", c="gray", lw=1, label="nanoGPT 4L/128 CPU (1.88)")
        ax.axhline(1.47, ls=":", c="gray", lw=1, label="nanoGPT 6L/384 GPU (1.47)")
        ax.set(xlabel="layers", ylabel="final validation loss", title="Quality vs depth")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "depth-val-loss.png")

    speed = [r for r in depths if r.tok_s]
    if speed:
        fig, ax1 = plt.subplots(figsize=(6, 4))
        ax2 = ax1.twinx()
        series = depth_series(speed)
        for k, (name, rs) in enumerate(series):  # tokens/s solid, p95 dashed, one colour per family and width
            marker = MARKERS.get(rs[0].arch, "o")
            ax1.plot([r.n_layer for r in rs], [r.tok_s for r in rs], marker=marker, c=f"C{k}", label=f"{name}: tok/s")
            ax2.plot([r.n_layer for r in rs], [r.p95_ms for r in rs], marker=marker, ls="--", c=f"C{k}", alpha=0.7,
                     label=f"{name}: p95 ms")
        ax1.set(xlabel="layers", ylabel="decode tokens/s (1 stream, 1 thread), solid", title="Speed vs depth")
        ax2.set_ylabel("p95 per-token latency (ms), dashed")
        ax1.grid(alpha=0.3)
        if len(series) > 1:
            lines = ax1.get_legend_handles_labels(), ax2.get_legend_handles_labels()
            ax1.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=7)
        save(fig, "depth-speed.png")

    for key, _, cost in COSTS:
        if any(finite(cost(r)) for r in rows):  # no speed run: no speed frontier (render says why)
            save(_pareto_figure(plt, rows, key, cost), f"depth-pareto-{key}.png")
    return names


def _pareto_figure(plt, rows: list[DepthRow], key: str, cost: Callable[[DepthRow], float | None]):
    minutes = in_minutes(rows)
    scale = 60 if key == "training" and minutes else 1
    xs = [cost(r) for r in rows]
    names = labels(rows)
    on = frontier(rows, cost)
    shown = [i for i, x in enumerate(xs) if finite(x)]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    datasets = list(dict.fromkeys(rows[i].dataset for i in shown))
    for k, ds in enumerate(datasets):
        front = [i for i in on if rows[i].dataset == ds]
        fx, fy = [xs[i] / scale for i in front], [rows[i].val_loss for i in front]
        label = "frontier" + (f" ({ds})" if len(datasets) > 1 else "")
        # the edge of the region the frontier dominates: flat until the next point's cost, then down to its loss
        ax.step(fx, fy, where="post", c=f"C{k}", lw=1.5, label=label)
        for arch in dict.fromkeys(rows[i].arch for i in front):  # both block families compete on one frontier
            pts = [i for i in front if rows[i].arch == arch]
            ax.scatter([xs[i] / scale for i in pts], [rows[i].val_loss for i in pts], color=f"C{k}", s=45, zorder=3,
                       marker=MARKERS.get(arch, "o"))
    off = [i for i in shown if i not in on]
    for n, arch in enumerate(dict.fromkeys(rows[i].arch for i in off)):
        pts = [i for i in off if rows[i].arch == arch]
        ax.scatter([xs[i] / scale for i in pts], [rows[i].val_loss for i in pts], facecolors="none",
                   edgecolors="gray", s=45, zorder=3, marker=MARKERS.get(arch, "o"),
                   label=None if n else "dominated (another is no worse on both, better on one)")
    if several_arches([rows[i] for i in shown]):
        for arch in sorted({rows[i].arch for i in shown}):
            ax.scatter([], [], marker=MARKERS.get(arch, "o"), color="black", s=30, label=f"block family {arch}")
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
