"""What every command shares: the store/data options, the stderr console and the one-line error policy."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from gptzoo.trainer.progress import Console
from gptzoo.zoo.atomic import no_space
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.store import Store, Variant

# Never cut at 80 columns when captured to a file or a pipe (see Console).
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
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Variant id (shakespeare-char-4l) or depth alias "
                                             "(4l, 4l-int8), as the server names them.")]


def fail(message: str, code: int = 1):
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # escaped: `gptzoo[train]` is not markup
    raise typer.Exit(code)


# Which extra brings a module a command may need (see pyproject.toml).
EXTRA_OF = {"torch": "train", "onnx": "export", "onnxscript": "export", "onnxruntime": "cpu", "litestar": "serve",
            "uvicorn": "serve", "prometheus_client": "serve", "httpx": "serve", "matplotlib": "report",
            "gguf": "interop", "safetensors": "interop", "tokenizers": "interop", "transformers": "interop"}
# Commands that need more than one extra name them all.
COMMAND_EXTRAS = {"export": "export,cpu", "bench": "export,cpu", "report": "export,cpu,report", "serve": "serve,cpu",
                  "generate": "cpu", "loadtest": "serve"}


def missing_extra(command: str, e: ModuleNotFoundError) -> str:
    command = {"nanogpt": "import nanogpt", "prepare": "data prepare", "list": "zoo list"}.get(command, command)
    module = (e.name or "").split(".")[0]
    extra = COMMAND_EXTRAS.get(command, EXTRA_OF.get(module, ""))
    if module == "torch" and command == "generate":
        extra = "train"  # --backend torch
    if not extra or module not in EXTRA_OF:
        raise e  # not an optional dependency: a real bug, keep the traceback
    hint = " (gpu instead of cpu on a CUDA machine)" if "cpu" in extra.split(",") else ""
    return f"`gptzoo {command}` needs {module}, which is not installed: pip install 'gptzoo[{extra}]'{hint}"


def handle_errors(fn):
    """gptzoo's own errors become `error: <reason>` on stderr and exit code 1 (2 for a bad name); a missing optional
    dependency names the extra to install; Ctrl-C exits 130. Anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from gptzoo.zoo.errors import GptzooError
        from gptzoo.zoo.names import InvalidName

        try:
            return fn(*args, **kwargs)
        except InvalidName as e:  # a usage error, caught before anything was touched
            fail(str(e), code=2)
        except GptzooError as e:
            fail(str(e))
        except ModuleNotFoundError as e:
            fail(missing_extra(fn.__name__.removesuffix("_cmd"), e))
        except PermissionError as e:
            fail(f"permission denied: {e.filename or e}")
        except OSError as e:  # the disk, not the code: full, read-only, gone
            if no_space(e):  # a write outside zoo.atomic (which names its file itself)
                fail(f"no space left on device{f': cannot write {e.filename}' if e.filename else ''}")
            fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper


def open_store(store: Path | None) -> Store:
    return Store(store)


def resolve(store: Store, model: str | None = None, layers: int | None = None, dataset: str | None = None) -> Variant:
    """The variant `--model` (an id or a depth alias such as `4l`, by the server's naming rule) or `--layers` names;
    among several variants of one alias, those whose id ends with it (`shakespeare-char-4l`, not `mine` at 4 layers),
    then `dataset`'s; still several is an error naming them."""
    if model and store.entry(model) is None:  # not an id in the store: perhaps an alias
        from gptzoo.server.aliases import depth_alias

        matches = [v for v in store.variants() if depth_alias(v) == model]
        if len(matches) > 1:  # ids that spell the alias (`...-4l`) before ids that only fall back to the depth
            matches = [v for v in matches if v.id.endswith(f"-{model}")] or matches
        if dataset and len(matches) > 1:
            matches = [v for v in matches if v.dataset_name == dataset] or matches
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise BadValue(f"--model {model!r} matches several variants ({', '.join(v.id for v in matches)}); name "
                           "one by its id")
    return store.resolve(model=model, layers=layers, dataset=dataset)  # an id, or its error


def _no_bool_placeholder(params: list) -> list:
    """Flags take no value: typer would show `<bool>` where a value's type goes."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


class Command(TyperCommand):
    """Every gptzoo command: its --help shows flags without a `<bool>` placeholder."""

    def get_params(self, ctx):
        return _no_bool_placeholder(super().get_params(ctx))


class Group(TyperGroup):
    """Every gptzoo command group (the root, `data`, `zoo`, `import`), as Command."""

    def get_params(self, ctx):
        return _no_bool_placeholder(super().get_params(ctx))
