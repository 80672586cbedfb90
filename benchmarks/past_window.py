"""Past the window (issue 25): what a context policy costs in quality, and whether a long generation keeps a flat
per-token cost, the oss block under `slide` against the gpt2 block under `half` (docs/oss.md, "Past the window").

    quality: validation loss of every 1,024-token stretch of the validation split, teacher-forced, with the context
             managed as the policy manages it in generation (gptzoo.zoo.evaluate.policy_nll; slide at several keeps),
             beside the in-window figure (the same split in non-overlapping block_size windows, no cache):
        .venv/bin/python benchmarks/past_window.py quality OSS_ID GPT2_ID
    speed:   a 2,000-token greedy single stream in-process through `Batch` on onnxruntime (1 thread), each token
             timed; mean ms/token over tokens 1,900-2,000 / over 100-200, and p99 / p50 of the inter-token times;
             rounds alternate the two variants, medians over rounds. Run once, quiet and pinned:
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


def token_times(model, tok, n: int) -> list[float]:
    """Seconds from one token to the next of a greedy single stream of n tokens (its family's default policy)."""
    batch = Batch(model, tok, slots=1)
    row = batch.new_row(tok.encode("\n"), SamplingParams(max_tokens=n, temperature=0.0))
    batch.add([row])
    stamps = [time.perf_counter()]
    while not row.done:
        batch.step()
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)], batch.policy


def speed(ids: list[str], rounds: int) -> None:
    store = Store(default_store())
    models = {}
    for vid in ids:
        v = store.load(vid)
        models[vid] = (open_variant(v, device="cpu", threads=1), from_spec(v.card.tokenizer))
        token_times(*models[vid], 300)  # warm up the session's paths
    got: dict[str, list[tuple[float, float, float]]] = {vid: [] for vid in ids}
    policy = {}
    for _ in range(rounds):
        for vid in ids:
            dt, policy[vid] = token_times(*models[vid], TOKENS)
            late, early = statistics.mean(dt[1900:2000]), statistics.mean(dt[100:200])
            gaps = np.asarray(dt[1:])  # inter-token times after the first token (the prompt's)
            p50, p99 = np.percentile(gaps, 50), np.percentile(gaps, 99)
            got[vid].append((late / early, p99 / p50, 1000 * float(np.mean(gaps))))
    print("| variant | policy | ms/token (mean) | late/early (goal <= 1.15) | p99/p50 (goal <= 1.5) |")
    print("|---|---|---|---|---|")
    for vid in ids:
        ratio, tail, ms = (statistics.median(x) for x in zip(*got[vid], strict=True))
        each = ", ".join(f"{r:.2f}/{t:.2f}" for r, t, _ in got[vid])
        print(f"| {vid} | {policy[vid]} | {ms:.3f} | {ratio:.3f} | {tail:.2f} |  (rounds: {each})")


if __name__ == "__main__":
    mode, *names = sys.argv[1:]
    if mode == "quality":
        quality(names)
    else:
        speed(names[:2], int(names[2]) if len(names) > 2 else 3)
