"""`gptzoo import nanogpt|hf`: bring a nanoGPT checkpoint or a Hugging Face GPT-2 folder into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gptzoo.cli.common import Command, DataDirOpt, Group, StoreOpt, err, fail, handle_errors, open_store, out

app = typer.Typer(help="Import checkpoints trained elsewhere into the store.", no_args_is_help=True, cls=Group)


@app.command("nanogpt", cls=Command)
@handle_errors
def nanogpt(
    ckpt: Annotated[Path, typer.Argument(help="ckpt.pt written by nanoGPT's train.py.")],
    meta: Annotated[Path | None, typer.Option(help="The dataset's meta.pkl (char vocabulary). Without it: GPT-2 BPE.")]
    = None,
    name: Annotated[str | None, typer.Option(help="Variant id. [default: nanogpt-<dataset>-<layers>l]",
                                             show_default=False)] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Prepared dataset to score the checkpoint on (its tokenizer must be the checkpoint's). [default: the "
             "dataset nanoGPT trained on, e.g. shakespeare_char, prepared on first use]", show_default=False)] = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Import without scoring: the card keeps only nanoGPT's "
                                          "own figure (reported_val_loss) and has no val_loss.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a variant with the same id.")] = False,
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Import a nanoGPT checkpoint as a store variant; export it next.

    The card's val_loss is the zoo's own figure: the checkpoint scored on every window of the validation split (as
    for a trained variant), so imported and trained variants compare directly. nanoGPT's best_val_loss (an estimate
    from random batches) is kept beside it as reported_val_loss.
    """
    from gptzoo.zoo.nanogpt import import_checkpoint

    def say(message: str) -> None:
        err.print(message, highlight=False)

    v = import_checkpoint(open_store(store), ckpt, meta, name, overwrite, data_dir=data_dir, dataset=dataset,
                          score=not no_eval, say=say)
    c = v.card
    val = f"val loss {c.val_loss:.4f} (whole split)" if c.val_loss is not None else "not scored"
    reported = f", nanoGPT reported {c.reported_val_loss:.4f}" if c.reported_val_loss is not None else ""
    out.print(f"imported {v.id}: {v.n_layer} layers, {c.params:,} params, {val}{reported} ({c.tokenizer['kind']} "
              f"tokenizer) -> {v.dir}", highlight=False)


@app.command("hf", cls=Command)
@handle_errors
def hf(
    folder: Annotated[Path, typer.Argument(help="A Hugging Face GPT2LMHeadModel folder (config.json, model.safetensors "
                                                "or pytorch_model.bin, GPT-2's tokenizer files).")],
    name: Annotated[str | None, typer.Option(help="Variant id. [default: hf-<dataset>-<layers>l]",
                                             show_default=False)] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Prepared dataset to score it on (its tokenizer must be the model's). [default: shakespeare, GPT-2 BPE, "
             "prepared on first use]", show_default=False)] = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Import without scoring (no val_loss).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a variant with the same id.")] = False,
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Import a GPT-2-architecture Hugging Face folder (GPT-2, distilgpt2, ...) as a store variant; export it next.

    Needs the interop extra (safetensors). Tied or untied heads, exact or tanh GELU, as config.json says. Two imports
    of one dataset with different depths form a depth family (distilgpt2 drafts for GPT-2).
    """
    try:
        import safetensors  # noqa: F401
    except ImportError:
        fail("importing a Hugging Face folder needs the interop extra: pip install 'gptzoo[interop]'", code=2)
    from gptzoo.zoo.hf_import import import_hf

    def say(message: str) -> None:
        err.print(message, highlight=False)

    v = import_hf(open_store(store), folder, name, overwrite, data_dir=data_dir, dataset=dataset, score=not no_eval,
                  say=say)
    c = v.card
    val = f"val loss {c.val_loss:.4f} (whole split)" if c.val_loss is not None else "not scored"
    out.print(f"imported {v.id}: {v.n_layer} layers, {c.params:,} params, {val} ({c.tokenizer['kind']} tokenizer) "
              f"-> {v.dir}", highlight=False)
