"""Loss estimation on fixed windows, so that every evaluation (during training, `gptzoo eval`, or an exported
model's check) scores exactly the same tokens and results compare to the last digit; and `policy_nll`, what a
context policy of generation costs in loss."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from gptzoo.zoo import context
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.model import GPT
from gptzoo.zoo.step_contract import Call, StepRunner, logits_without_cache


def eval_windows(n_tokens: int, block_size: int, max_windows: int | None) -> np.ndarray:
    """Start offsets of non-overlapping windows of block_size+1 tokens (inputs and shifted targets), spread evenly
    over the split; all of them when `max_windows` is None or larger than what fits."""
    n_fit = (n_tokens - 1) // block_size
    if n_fit < 1:
        raise BadValue(f"split of {n_tokens} tokens is shorter than one block of {block_size + 1}")
    starts = np.arange(n_fit) * block_size
    if max_windows is not None and max_windows < n_fit:
        starts = starts[np.linspace(0, n_fit - 1, max_windows).round().astype(int)]
    return starts


def batches(data: np.ndarray, starts: np.ndarray, block_size: int, batch_size: int):
    for i in range(0, len(starts), batch_size):
        s = starts[i : i + batch_size]
        x = np.stack([data[j : j + block_size] for j in s]).astype(np.int64)
        y = np.stack([data[j + 1 : j + 1 + block_size] for j in s]).astype(np.int64)
        yield torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def mean_loss(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: np.ndarray,
    block_size: int,
    batch_size: int,
    max_windows: int | None,
) -> float:
    """Token-weighted mean cross-entropy of `loss_fn(x, y)` (which returns a mean over its batch) on fixed windows."""
    starts = eval_windows(len(data), block_size, max_windows)
    total, count = 0.0, 0
    for x, y in batches(data, starts, block_size, batch_size):
        total += float(loss_fn(x, y)) * y.numel()
        count += y.numel()
    return total / count


def model_loss_fn(model: GPT, device: str | torch.device = "cpu", autocast=None):
    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.to(device), y.to(device)
        if autocast is None:
            return model(x, y)[1]
        with autocast:
            return model(x, y)[1]

    return fn


def estimate(model: GPT, splits: dict[str, np.ndarray], batch_size: int, max_windows: int | None, **kw) -> dict:
    """{split: loss} for a torch model, evaluated in eval mode and restored to its previous mode."""
    was_training = model.training
    model.eval()
    try:
        fn = model_loss_fn(model, **kw)
        return {k: mean_loss(fn, v, model.config.block_size, batch_size, max_windows) for k, v in splits.items()}
    finally:
        model.train(was_training)


def onnx_loss_fn(model: StepRunner):
    """loss_fn for `mean_loss` that runs the cached step (an exported graph, gptzoo.zoo.runtime.OnnxModel) with no
    past."""

    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, T = x.shape
        logits = logits_without_cache(model, x.numpy())
        return torch.nn.functional.cross_entropy(torch.from_numpy(logits).view(B * T, -1), y.view(-1))

    return fn


def policy_nll(model: StepRunner, streams: np.ndarray, policy: str, keep: int | None = None) -> float:
    """Mean next-token loss of teacher-forced `streams` [S, N] when the context is managed as `policy` manages it
    in generation (gptzoo.zoo.context: exact, a sliding window of block_size; half, re-prefill half a window when it
    fills; slide, move the window's last `keep` entries to the slot's front, positions kept). Measures what a
    context policy costs in quality, on real text."""
    policy = context.resolve(policy, model.shape)
    S, N = streams.shape
    B = model.shape.block_size
    keep = context.slide_keep(B) if keep is None else keep
    cache, w0, total = model.new_cache(S), 0, 0.0
    everyone = np.ones(S, bool)
    for i in range(N - 1):
        if i - w0 >= B:  # the window is full
            if policy == "exact":
                logits = model.run(cache, Call.fill(0, streams[:, i - B + 1 : i + 1], np.zeros(S, np.int64)))
                total += _nll(logits[:, -1], streams[:, i + 1])
                continue
            if policy == "slide":
                for s in range(S):
                    model.move(cache, s, B - keep, keep)
                w0 = i - keep
            else:
                w0 = i - B // 2
                model.run(cache, Call.fill(0, streams[:, w0:i], np.zeros(S, np.int64)))
        p = i - w0
        offsets = np.full(S, w0) if policy == "slide" else None  # slide: true positions, else window columns
        logits = model.run(cache, Call.decode(0, streams[:, i], np.full(S, p), everyone, offsets))
        total += _nll(logits[:, -1], streams[:, i + 1])
    return total / (S * (N - 1))


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(targets)), targets].sum())
