"""The `gptzoo` command: a thin Typer layer over gptzoo.trainer, gptzoo.exports and gptzoo.server."""

from __future__ import annotations

import typer

from gptzoo.cli import bench, data, evaluate, export, generate, importer, loadtest, report, serve, train, zoo
from gptzoo.cli.common import Command, Group

app = typer.Typer(
    name="gptzoo",
    help="Train, export, serve and watch a zoo of GPT models that differ only in depth.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    cls=Group,
)
app.add_typer(data.app, name="data")
app.add_typer(zoo.app, name="zoo")
app.add_typer(importer.app, name="import")
app.command("train", cls=Command)(train.train)
app.command("eval", cls=Command)(evaluate.eval_cmd)
app.command("export", cls=Command)(export.export_cmd)
app.command("generate", cls=Command)(generate.generate_cmd)
app.command("bench", cls=Command)(bench.bench_cmd)
app.command("report", cls=Command)(report.report_cmd)
app.command("serve", cls=Command)(serve.serve_cmd)
app.command("loadtest", cls=Command)(loadtest.loadtest_cmd)


if __name__ == "__main__":
    app()
