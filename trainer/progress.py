"""A rich progress bar for training on stderr: iteration, loss, tokens/s and ETA; stdout stays for results.

Also the console every command prints through (`cli.common` uses it too): one that never cuts a line written to a
file or a pipe."""

from __future__ import annotations

import rich.console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Width of a console writing to a file or a pipe: rich assumes 80 there and cuts table cells and the progress line
# with "…"; nothing reads those lines on a screen, so make them wide enough to hold everything (tables and the bar
# are as wide as their content, not as the console).
PIPE_WIDTH = 1000


class Console(rich.console.Console):
    """rich's Console, but as wide as PIPE_WIDTH when its stream is not a terminal (unless COLUMNS is set): output
    captured to a file reads the same as on a screen, uncut. Decided per print, as CliRunner swaps the streams."""

    @property
    def size(self) -> rich.console.ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and not self._environ.get("COLUMNS", "").isdigit():
            return rich.console.ConsoleDimensions(PIPE_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        rich.console.Console.size.fset(self, new_size)


err_console = Console(stderr=True)


class TrainProgress:
    def __init__(self, total: int, start: int, description: str, enabled: bool = True):
        self.enabled = enabled
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            # The run's one speed figure, the same as the summary's and the card's ms_per_iter: tokens per step over
            # the median step time so far, evaluations and the first steps (one-off costs) left out.
            TextColumn("{task.fields[tps]} tok/s (median step)"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            disable=not enabled,
        )
        self._task = self._bar.add_task(description, total=total, completed=start, loss="-", tps="-")

    def __enter__(self) -> TrainProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.__exit__(*exc)

    def start_at(self, iteration: int) -> None:
        self._bar.update(self._task, completed=iteration)

    def step(self, iteration: int, loss: float, tokens_per_s: float | None) -> None:
        """`tokens_per_s`: tokens per step over the median step time so far (None until a step was timed)."""
        tps = "-" if tokens_per_s is None else f"{tokens_per_s:,.0f}"
        self._bar.update(self._task, completed=iteration, loss=f"{loss:.4f}", tps=tps)

    def log(self, message: str) -> None:
        if self.enabled:
            self._bar.console.print(message)
