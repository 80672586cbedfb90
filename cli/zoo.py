"""`gptzoo zoo list`: what the store holds."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from gptzoo.cli.common import Command, Group, StoreOpt, err, handle_errors, open_store, out
from gptzoo.zoo.store import card_family

app = typer.Typer(help="Inspect the store of variants.", no_args_is_help=True, cls=Group)


@app.command("list", cls=Command)
@handle_errors
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the cards as a JSON array.")] = False,
    store: StoreOpt = None,
) -> None:
    """List the variants in the store: block family and its settings, depth, width, parameters, validation loss,
    and whether it is exported."""
    the_store = open_store(store)
    variants, broken = the_store.scan()
    if as_json:
        # arch and family spelled out even for gpt2 (a card leaves its default arch out)
        rows = [v.card.to_dict() | {"arch": v.card.arch, "family": card_family(v.card), "exported": v.exported,
                                    "broken": None} for v in variants]
        rows += [{"id": b.id, "broken": b.reason} for b in broken]
        print(json.dumps(rows, indent=2))
        return
    if not variants and not broken:
        out.print(f"the store {the_store.root} is empty: train a variant with `gptzoo train --layers 4`")
        return
    table = Table(title=f"gptzoo store: {the_store.root}")
    ids = [v.id for v in variants] + [b.id for b in broken]
    table.add_column("id", no_wrap=True, min_width=max(map(len, ids)))  # ids are for copy-paste
    for col, just in [("arch", "left"), ("layers", "right"), ("width", "right"), ("params", "right"),
                      ("val loss", "right"), ("iters", "right"), ("exported", "center")]:
        table.add_column(col, justify=just)
    for v in variants:
        c = v.card
        table.add_row(c.id, c.arch_summary, str(c.n_layer), str(c.n_embd), f"{c.params:,}" if c.params else "?",
                      f"{c.val_loss:.4f}" if c.val_loss is not None else "-", str(c.iterations or "-"),
                      "yes" if v.exported else "no")
    for b in broken:
        table.add_row(b.id, "?", "?", "?", "?", "-", "-", "[red]broken[/]")
    out.print(table)
    for b in broken:
        err.print(f"[yellow]warning:[/] {b.id}: broken: {b.reason}", highlight=False)
