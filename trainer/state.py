"""The training run's pieces that are not the loop itself: its typed state (`TrainState`, one value the loop reads
and updates), its result, the learning-rate schedule, the checkpointed batch sampler and the stop reasons."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from gptzoo.trainer.config import TrainConfig
from gptzoo.trainer.distributed import Dist
from gptzoo.zoo import store as storemod
from gptzoo.zoo.errors import GptzooError

# Steps at the start of a run (or resume) left out of its speed: they pay one-off allocation (and compile) costs.
SETUP_STEPS = 3
# Why a run stopped (card.stop_reason, TrainResult.stop_reason).
STOP_MAX_ITERS, STOP_PATIENCE, STOP_INTERRUPTED, STOP_DIVERGED = "max_iters", "patience", "interrupted", "diverged"


class TrainError(GptzooError):
    """Training cannot start or continue (the reason is in the message)."""


@dataclass
class TrainState:
    """Everything the loop changes as it runs; the checkpoint saves the fields a resume needs."""

    step: int = 0  # optimizer steps done (the checkpoint's iter_num)
    start_step: int = 0  # where this process began (0, or the resumed checkpoint's step)
    best_val: float = float("inf")  # best fixed-window validation loss so far
    evals_since_best: int = 0  # early stopping's counter (checkpointed for --resume)
    last_saved: int | None = None  # step of the newest checkpoint on disk (what a divergence leaves)
    stop_requested: bool = False  # Ctrl-C seen; a second one raises KeyboardInterrupt
    stop_reason: str = STOP_MAX_ITERS
    prev_seconds: float = 0.0  # training time of the runs this one resumes
    prev_tokens: int = 0  # tokens those runs saw
    step_times: list[float] = field(default_factory=list)  # seconds per timed step, sorted: the median is the speed

    def ms_per_iter(self) -> float | None:
        """The run's one speed figure (the bar, the summary, the log and the card all show this value): the median
        timed step in ms, rounded once here so that no two places can round it apart."""
        return round(median_sorted(self.step_times) * 1000, 3) if self.step_times else None


@dataclass
class TrainResult:
    variant: storemod.Variant | None  # None on non-zero ranks
    iterations: int
    best_val_loss: float  # on the periodic evaluation's fixed windows (the card's val_loss is the whole split)
    interrupted: bool
    ms_per_iter: float | None  # median wall time of one optimizer step, evaluations excluded (None: no step timed)
    tokens_per_s: float | None  # tokens per step / that median: the figure the progress bar shows as it goes
    stop_reason: str = STOP_MAX_ITERS  # max_iters, patience or interrupted


def median_sorted(sorted_times: list[float]) -> float | None:
    """The median of a sorted list without sorting it again (the progress bar asks for it every step)."""
    n = len(sorted_times)
    return (sorted_times[(n - 1) // 2] + sorted_times[n // 2]) / 2 if n else None


def lr_at(it: int, cfg: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at max_iters."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= cfg.max_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


class BatchSampler:
    """Random training windows drawn from a seeded generator whose state is checkpointed, so a resumed run sees the
    same batches as an uninterrupted one. The split lives in memory as one tensor and windows are gathered at once."""

    def __init__(self, split: np.ndarray, block_size: int, batch_size: int, seed: int):
        self.data = torch.from_numpy(np.asarray(split).astype(np.int64))
        self.block_size, self.batch_size = block_size, batch_size
        if len(self.data) <= block_size + 1:
            raise TrainError(f"training split ({len(self.data)} tokens) is shorter than block_size {block_size}")
        self.gen = torch.Generator().manual_seed(seed)
        self._offsets = torch.arange(block_size)

    def _draw(self) -> torch.Tensor:
        return torch.randint(len(self.data) - self.block_size, (self.batch_size,), generator=self.gen)

    def skip(self, n_batches: int) -> None:
        """Fast-forward the data order past `n_batches` batches (how a resumed run finds its place)."""
        for _ in range(n_batches):
            self._draw()

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self._draw()[:, None] + self._offsets
        return self.data[pos], self.data[pos + 1]


def main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def stop_wanted(stop_requested: bool, patience_hit: bool, at_stop_iter: bool, dist: Dist) -> str | None:
    """Why to stop before the next step (early stopping, Ctrl-C, `stop_at`), or None. Every rank stops at the same
    step: only rank 0 evaluates, so its patience verdict and every rank's Ctrl-C are MAX-reduced across ranks."""
    code = 2 if patience_hit else 1 if (stop_requested or at_stop_iter) else 0
    if dist.enabled:
        flag = torch.tensor([float(code)], device=dist.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        code = int(flag.item())
    return {0: None, 1: STOP_INTERRUPTED, 2: STOP_PATIENCE}[code]
