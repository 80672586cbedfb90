"""`gptzoo import nanogpt`: bring a nanoGPT checkpoint into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gptzoo.cli.common import StoreOpt, handle_errors, open_store, out

app = typer.Typer(help="Import checkpoints trained elsewhere into the store.", no_args_is_help=True)


@app.command("nanogpt")
@handle_errors
def nanogpt(
    ckpt: Annotated[Path, typer.Argument(help="ckpt.pt written by nanoGPT's train.py.")],
    meta: Annotated[Path | None, typer.Option(help="The dataset's meta.pkl (char vocabulary). Without it: GPT-2 BPE.")]
    = None,
    name: Annotated[str | None, typer.Option(help="Variant id. [default: nanogpt-<dataset>-<layers>l]",
                                             show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a variant with the same id.")] = False,
    store: StoreOpt = None,
) -> None:
    """Import a nanoGPT checkpoint as a store variant (val_loss from its best_val_loss); export it next."""
    from gptzoo.zoo.nanogpt import import_checkpoint

    v = import_checkpoint(open_store(store), ckpt, meta, name, overwrite)
    out.print(f"imported {v.id}: {v.n_layer} layers, {v.card.params:,} params, val loss {v.card.val_loss:.4f} "
              f"({v.card.tokenizer['kind']} tokenizer) -> {v.dir}", highlight=False)
