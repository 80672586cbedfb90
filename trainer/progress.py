"""A rich progress bar for training on stderr: iteration, loss, tokens/s and ETA; stdout stays for results."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

err_console = Console(stderr=True)


class TrainProgress:
    def __init__(self, total: int, start: int, description: str, enabled: bool = True):
        self.enabled = enabled
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
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

    def step(self, iteration: int, loss: float, tokens_per_s: float) -> None:
        self._bar.update(self._task, completed=iteration, loss=f"{loss:.4f}", tps=f"{tokens_per_s:,.0f}")

    def log(self, message: str) -> None:
        if self.enabled:
            self._bar.console.print(message)
