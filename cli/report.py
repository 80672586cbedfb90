"""`gptzoo report`: regenerate the depth study (markdown + PNG plots) from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gptzoo.cli.common import StoreOpt, handle_errors, open_store, out


@handle_errors
def report_cmd(
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder for depth-study.md and its plots (replaced there). [default: $GPTZOO_HOME/report, i.e. "
        "~/.gptzoo/report; never the current folder, so a run inside a clone leaves its docs/ alone]",
        show_default=False)] = None,
    measure: Annotated[bool, typer.Option("--measure/--no-measure", help="Time a decode of every exported variant.")]
    = True,
    threads: Annotated[int, typer.Option(min=1, help="Threads for the speed measurement.")] = 1,
    store: StoreOpt = None,
) -> None:
    """Write the depth study: val-loss curves per depth, final val loss vs depth, tokens/s and p95 latency vs depth,
    the Pareto frontiers of val loss against decode ms/token and against training time (the variants worth serving
    and training; --no-measure leaves out the ms/token one), and the depth -> params / val loss / tokens/s / export
    size / frontier table, compared with nanoGPT's seed figures."""
    from gptzoo.measure.report import write_report
    from gptzoo.zoo.store import gptzoo_home

    target = write_report(open_store(store), out_dir or gptzoo_home() / "report", measure, threads)
    out.print(f"wrote {target} and its plots", highlight=False)
