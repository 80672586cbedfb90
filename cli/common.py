"""What every command shares: the store/data options, the stderr console and the one-line error policy."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gptzoo.zoo.store import Store

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        envvar="GPTZOO_STORE",
        help="Store folder holding the variants. [default: $GPTZOO_HOME/store, i.e. ~/.gptzoo/store]",
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="GPTZOO_DATA",
        help="Folder of prepared datasets. [default: $GPTZOO_HOME/data, i.e. ~/.gptzoo/data]",
        show_default=False,
    ),
]
LayersOpt = Annotated[int | None, typer.Option("--layers", "-l", min=1, help="Depth of the variant (layers).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Variant id, e.g. shakespeare-char-4l.")]


def fail(message: str, code: int = 1):
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def handle_errors(fn):
    """Domain errors become `error: <reason>` on stderr and exit code 1; Ctrl-C exits 130; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from gptzoo.trainer.loop import TrainError
        from gptzoo.zoo.checkpoint import CheckpointError
        from gptzoo.zoo.datasets import DataError
        from gptzoo.zoo.names import InvalidName
        from gptzoo.zoo.runtime import OnnxLoadError
        from gptzoo.zoo.sources import SourceError
        from gptzoo.zoo.store import StoreError

        try:
            return fn(*args, **kwargs)
        except InvalidName as e:  # a usage error, caught before anything was touched
            fail(str(e), code=2)
        except (StoreError, DataError, SourceError, TrainError, CheckpointError, OnnxLoadError, ValueError) as e:
            fail(str(e))
        except PermissionError as e:
            fail(f"permission denied: {e.filename or e}")
        except OSError as e:  # the disk, not the code: full, read-only, gone
            fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper


def open_store(store: Path | None) -> Store:
    return Store(store)
