"""Past the window (issue 25): what a context policy costs in quality, and whether a long generation keeps a flat
per-token cost, the oss block under `slide` against the gpt2 block under `half` (docs/oss.md, "Past the window").

    quality: validation loss of every 1,024-token stretch of the validation split, teacher-forced, with the context
             managed as the policy manages it in generation (gptzoo.zoo.evaluate.policy_nll; slide at several keeps),
             beside the in-window figure (the same split in non-overlapping block_size windows, no cache):
        .venv/bin/python benchmarks/past_window.py quality OSS_ID GPT2_ID
    speed:   a 2,000-token greedy single stream in-process through `Batch` on onnxruntime (1 thread), each token
             timed (wall, and the thread's CPU time, which a busy machine's preemptions do not reach); mean
             ms/token over tokens 1,900-2,000 / over 100-200, p99 / p50 of the inter-token times, and a step that
             moves the window (slide's move, half's re-prefill) against the others; rounds alternate the two
             variants, medians over rounds. Run once, quiet and pinned:
        flock /tmp/gptzoo-bench.lock taskset -c 1 .venv/bin/python benchmarks/past_window.py speed OSS_ID GPT2_ID 3

The variants come from the store (GPTZOO_HOME), exported to ONNX; data from the prepared dataset they were trained on.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from gptzoo.zoo import datasets
from gptzoo.zoo.context import slide_keep
from gptzoo.zoo.evaluate import mean_loss, onnx_loss_fn, policy_nll
from gptzoo.zoo.generate import Batch
from gptzoo.zoo.runtime import open_variant
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.store import Store, default_store
from gptzoo.zoo.tokenizers import from_spec

STRETCH = 1024
TOKENS = 2000


def quality(ids: list[str]) -> None:
    store = Store(default_store())
    print("| variant | policy | keep | loss over 1,024-token stretches | in-window loss | difference |")
    print("|---|---|---|---|---|---|")
    for vid in ids:
        v = store.load(vid)
        onnx = open_variant(v, device="cpu", threads=1)
        val = np.asarray(datasets.for_variant(v).val).astype(np.int64)
        block = onnx.shape.block_size
        inside = mean_loss(onnx_loss_fn(onnx), val, block, 32, None)
        n = len(val) // STRETCH
        streams = val[: n * STRETCH].reshape(n, STRETCH)
        if onnx.shape.relative:
            runs = [("slide", k) for k in (block // 2, slide_keep(block), block * 7 // 8)]
        else:
            runs = [("half", None)]
        for policy, keep in runs:
            loss = policy_nll(onnx, streams, policy, keep=keep)
            print(f"| {vid} | {policy} | {keep if keep is not None else '-'} | {loss:.4f} | {inside:.4f} | "
                  f"{loss - inside:+.4f} |", flush=True)


def token_times(model, tok, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A greedy single stream of n tokens under its family's default policy: each step's wall and thread CPU
    seconds (step i makes token i), whether the step moved the window (a slide or a re-prefill), and the policy."""
    batch = Batch(model, tok, slots=1)
    row = batch.new_row(tok.encode("\n"), SamplingParams(max_tokens=n, temperature=0.0))
    batch.add([row])
    wall, cpu, moved = [], [], []
    while not row.done:
        slides, w, c = batch.slides, time.perf_counter(), time.thread_time()
        batch.step()
        wall.append(time.perf_counter() - w)
        cpu.append(time.thread_time() - c)
        moved.append(batch.slides > slides or (batch.stats.prefill_tokens > 0 and len(wall) > 1))
    return np.asarray(wall), np.asarray(cpu), np.asarray(moved), batch.policy


def figures(dt: np.ndarray, moved: np.ndarray) -> tuple[float, float, float, float]:
    """late/early (mean over tokens 1,900-2,000 / 100-200), p99/p50 of the inter-token times (after the first
    token: the prompt's), the mean step in ms, and a window-moving step's mean / the others'."""
    gaps, m = dt[1:], moved[1:]
    late_early = dt[1900:2000].mean() / dt[100:200].mean()
    p50, p99 = np.percentile(gaps, 50), np.percentile(gaps, 99)
    return late_early, p99 / p50, 1000 * gaps.mean(), gaps[m].mean() / gaps[~m].mean() if m.any() else 1.0


def speed(ids: list[str], rounds: int) -> None:
    store = Store(default_store())
    models = {}
    for vid in ids:
        v = store.load(vid)
        models[vid] = (open_variant(v, device="cpu", threads=1), from_spec(v.card.tokenizer))
        token_times(*models[vid], 300)  # warm up the session's paths
    got: dict[str, list] = {vid: [] for vid in ids}
    policy = {}
    for _ in range(rounds):
        for vid in ids:  # alternating, so a busier moment of the machine falls on both
            wall, cpu, moved, policy[vid] = token_times(*models[vid], TOKENS)
            got[vid].append((*figures(wall, moved), *figures(cpu, moved)[:2], int(moved.sum())))
    print("| variant | policy | ms/token | late/early (goal <= 1.15) | p99/p50 (goal <= 1.5) | window step / other "
          "step | CPU time: late/early | CPU time: p99/p50 | window moves |")
    print("|---|---|---|---|---|---|---|---|---|")
    for vid in ids:
        le, tail, ms, step, cle, ctail, moves = (statistics.median(x) for x in zip(*got[vid], strict=True))
        print(f"| {vid} | {policy[vid]} | {ms:.3f} | {le:.3f} | {tail:.2f} | {step:.2f} | {cle:.3f} | {ctail:.2f} | "
              f"{moves:.0f} |")
        print("  rounds (late/early, p99/p50): " + ", ".join(f"{r[0]:.2f}/{r[1]:.2f}" for r in got[vid]))


if __name__ == "__main__":
    mode, *names = sys.argv[1:]
    if mode == "quality":
        quality(names)
    else:
        speed(names[:2], int(names[2]) if len(names) > 2 else 3)
