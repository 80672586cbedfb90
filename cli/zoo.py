"""`gptzoo zoo list`: what the store holds."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from gptzoo.cli.common import StoreOpt, handle_errors, open_store, out

app = typer.Typer(help="Inspect the store of variants.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the cards as a JSON array.")] = False,
    store: StoreOpt = None,
) -> None:
    """List the variants in the store: depth, width, parameters, validation loss, and whether it is exported."""
    the_store = open_store(store)
    variants = the_store.variants()
    if as_json:
        print(json.dumps([v.card | {"exported": v.exported} for v in variants], indent=2))
        return
    if not variants:
        out.print(f"the store {the_store.root} is empty: train a variant with `gptzoo train --layers 4`")
        return
    table = Table(title=f"gptzoo store: {the_store.root}")
    table.add_column("id", no_wrap=True, min_width=max(len(v.id) for v in variants))  # ids are for copy-paste
    for col, just in [("layers", "right"), ("width", "right"), ("params", "right"), ("val loss", "right"),
                      ("iters", "right"), ("exported", "center")]:
        table.add_column(col, justify=just)
    for v in variants:
        c = v.card
        val = c.get("val_loss")
        table.add_row(c["id"], str(c["n_layer"]), str(c.get("n_embd", "?")), f"{c.get('params', 0):,}",
                      f"{val:.4f}" if isinstance(val, float) else "-", str(c.get("iterations", "-")),
                      "yes" if v.exported else "no")
    out.print(table)
