"""`gptzoo data prepare`: text -> token ids, ready for training."""

from __future__ import annotations

from typing import Annotated

import typer

from gptzoo.cli.common import Command, DataDirOpt, Group, handle_errors, out

app = typer.Typer(help="Prepare datasets (tokenize text and split it 90/10 into train/val).", no_args_is_help=True,
                  cls=Group)


@app.command("prepare", cls=Command)
@handle_errors
def prepare(
    dataset: Annotated[str, typer.Argument(help="shakespeare_char (chars), shakespeare (GPT-2 BPE) or text (a file).")],
    source: Annotated[
        str | None,
        typer.Option(help="Local path or http(s) URL of the text. [default: the public tiny-Shakespeare URL, or the "
                     "copy in $GPTZOO_DATA_SOURCE]", show_default=False),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Dataset name to save under. [default: the dataset kind, or the "
                                             "file's stem for text]", show_default=False)] = None,
    tokenizer: Annotated[str | None, typer.Option(help="For `text`: char or gpt2.")] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of the source (checked before use).")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Prepare a dataset: download (or read) the text, check its sha256, tokenize it and write train/val ids."""
    from gptzoo.trainer.data import prepare as do_prepare
    from gptzoo.zoo.datasets import load

    folder = do_prepare(dataset, data_dir, source=source, name=name, tokenizer=tokenizer, sha256=sha256)
    meta = load(folder.name, folder.parent).meta
    out.print(
        f"prepared {meta['name']}: {meta['n_train']:,} train + {meta['n_val']:,} val tokens, "
        f"vocab {meta['vocab_size']:,} ({meta['tokenizer']['kind']}) -> {folder}",
        highlight=False,
    )
