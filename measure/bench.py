"""`gptzoo bench`: generation speed of the zoo, measured in one process and one run so the ratios compare.

For each exported variant in the store, and for fresh random-weight models at width 384 / block 256 (so the figures
do not depend on what was trained), single-stream tokens/s of (a) nanoGPT-style generate without a cache, (b) torch
with a KV cache, (c) gptzoo on onnxruntime; aggregate tokens/s at batch 8 and 32; time to first token; prefill
tokens/s. Every figure is the median of `repeats` runs.

The task is the same for every backend: a prompt of half a window (block_size/2 tokens), then greedy decoding until
the window is full, so nanoGPT's cache-free generate re-runs contexts of half to all of the window, as it does in use.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gptzoo.zoo.generate import Batch
from gptzoo.zoo.kv_step import TorchModel
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.step_contract import Call, StepRunner
from gptzoo.zoo.tokenizers import CharTokenizer

RANDOM_DEPTHS = (1, 4, 6, 12)
RANDOM_WIDTH = dict(n_embd=384, n_head=6, block_size=256, vocab_size=65)


@dataclass
class Row:
    model: str
    n_layer: int
    n_embd: int
    params: int
    nanogpt_tok_s: float  # (a) no cache, context re-run every token
    torch_kv_tok_s: float  # (b) torch, KV cache
    onnx_tok_s: float  # (c) onnxruntime, KV cache
    onnx_ms_per_token: float
    speedup_vs_nanogpt: float  # c / a
    batch8_tok_s: float  # aggregate over 8 streams
    batch32_tok_s: float
    batch32_vs_1: float
    ttft_ms: float  # a prompt of block_size/2 tokens to its first token, batch 1
    prefill_tok_s: float  # one prefill of a full window
    provider: str
    arch: str = "gpt2"  # the block family (docs/oss.md); the random-weight models are gpt2


def any_vocabulary(n: int) -> CharTokenizer:
    """A tokenizer of exactly n symbols, for timing models whose text does not matter (random weights)."""
    return CharTokenizer("".join(chr(0x100 + i) for i in range(n)))


def read_bandwidth_gbs(mb: int = 400, repeats: int = 5) -> float:
    """This machine's single-thread memory read speed: a numpy sum (every byte read once) over an array far larger
    than the caches, the median of `repeats`. A batch-1 decode step cannot beat reading every weight once."""
    a = np.ones(mb * 1024 * 1024 // 8)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.sum()
        times.append(time.perf_counter() - t0)
    return a.nbytes / statistics.median(times) / 1e9


def _median(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def decode_run(runner: StepRunner, tok, batch: int, n_tokens: int, prompt: int, seed: int = 0) -> tuple[float, float]:
    """(seconds to the first token, tokens/s of the decode after it, all rows together) for greedy decoding."""
    rng = np.random.default_rng(seed)
    b = Batch(runner, tok, policy=None, slots=batch)  # the family's default (slide for oss, half for gpt2)
    rows = [b.new_row(rng.integers(0, runner.shape.vocab_size, prompt).tolist(),
                      SamplingParams(max_tokens=n_tokens, temperature=0.0)) for _ in range(batch)]
    t0 = time.perf_counter()
    b.add(rows)
    b.step()  # the prompts, and every row's first token
    t1 = time.perf_counter()
    for _ in range(n_tokens - 1):
        b.step()
    t2 = time.perf_counter()
    return t1 - t0, batch * (n_tokens - 1) / (t2 - t1)


def nanogpt_tok_s(model: GPT, n_tokens: int, prompt: int) -> float:
    idx = torch.randint(0, model.config.vocab_size, (1, prompt))
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(idx, n_tokens, temperature=1.0, top_k=1)
    return n_tokens / (time.perf_counter() - t0)


def prefill_tok_s(runner: StepRunner) -> float:
    T = runner.shape.block_size
    ids = np.random.default_rng(0).integers(0, runner.shape.vocab_size, T).tolist()
    cache, call = runner.new_cache(1), Call.fill(0, [ids], [0])
    t0 = time.perf_counter()
    runner.run(cache, call)
    return T / (time.perf_counter() - t0)


def bench_model(name: str, model: torch.nn.Module, onnx_path: Path, threads: int, repeats: int, quick: bool) -> Row:
    """One model of either block family (GPT or OSS: the same config fields, generate and step contract)."""
    torch.set_num_threads(threads)
    model = model.eval()
    c = model.config
    tok = any_vocabulary(c.vocab_size)
    onnx = OnnxModel(onnx_path, device="auto", threads=threads)
    tmodel = TorchModel(model)
    prompt = c.block_size // 2
    n = c.block_size - prompt if not quick else min(16, c.block_size - prompt)  # decode until the window is full
    decode_run(onnx, tok, 1, 8, prompt)  # warm-up: first runs allocate
    nano = _median(lambda: nanogpt_tok_s(model, n, prompt), repeats)
    tkv = _median(lambda: decode_run(tmodel, tok, 1, n, prompt)[1], repeats)
    single = [decode_run(onnx, tok, 1, n, prompt) for _ in range(repeats)]
    ttft = statistics.median(s[0] for s in single)
    one = statistics.median(s[1] for s in single)
    b8 = _median(lambda: decode_run(onnx, tok, 8, n, prompt)[1], repeats)
    b32 = _median(lambda: decode_run(onnx, tok, 32, n, prompt)[1], repeats)
    pre = _median(lambda: prefill_tok_s(onnx), repeats)
    return Row(name, c.n_layer, c.n_embd, model.num_params(), nano, tkv, one, 1000 / one, one / nano, b8, b32,
               b32 / one, ttft * 1000, pre, onnx.provider, getattr(c, "arch", "gpt2"))


def random_models(depths=RANDOM_DEPTHS, seed: int = 0):
    for d in depths:
        torch.manual_seed(seed)
        yield f"random-{d}l-384", GPT(GPTConfig(n_layer=d, **RANDOM_WIDTH))


def export_random(model: GPT, folder: Path) -> Path:
    """Export a random-weight model with the same exporter as the store's variants (parity not needed here)."""
    from gptzoo.exports.onnx_export import export_model

    path = folder / f"random-{model.config.n_layer}l.onnx"
    export_model(model, path, gptzoo_id=path.stem)
    return path


def run_bench(store, threads: int = 1, repeats: int = 3, depths=RANDOM_DEPTHS, include_store: bool = True,
              quick: bool = False, say=lambda m: None) -> list[Row]:
    from gptzoo.zoo.checkpoint import load_variant

    rows = []
    if include_store:
        for v in store.variants():
            if v.exported and not v.card.quantization:
                say(f"benchmarking {v.id}")
                rows.append(bench_model(v.id, load_variant(v)[1], v.path("model.onnx"), threads, repeats, quick))
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in random_models(depths):
            say(f"exporting and benchmarking {name}")
            rows.append(bench_model(name, model, export_random(model, Path(tmp)), threads, repeats, quick))
    return rows


def as_dicts(rows: list) -> list[dict]:
    return [asdict(r) for r in rows]


@dataclass
class PolicyRow:
    model: str
    policy: str
    tokens: int  # generated in one stream from a 16-token prompt
    tok_s: float  # single stream, all tokens (the window fills after block_size - 16)
    batch8_tok_s: float | None  # aggregate over 8 streams
    val_nll: float | None  # teacher-forced loss of 8 validation streams under the policy (trained variants only)


def long_generation(runner: StepRunner, tok, n_tokens: int, policy: str, batch: int = 1) -> float:
    rng = np.random.default_rng(0)
    b = Batch(runner, tok, policy=policy, slots=batch)
    rows = [b.new_row(rng.integers(0, runner.shape.vocab_size, 16).tolist(),
                      SamplingParams(max_tokens=n_tokens, temperature=0.0)) for _ in range(batch)]
    t0 = time.perf_counter()
    b.add(rows)
    while not all(r.done for r in rows):
        b.step()
    return batch * n_tokens / (time.perf_counter() - t0)


def run_policies(store, threads: int = 1, n_tokens: int = 1000, depths=(4, 12), data_dir=None,
                 say=lambda m: None) -> list[PolicyRow]:
    """A long generation under each context policy (speed), and each policy's validation loss (quality)."""
    from gptzoo.zoo import datasets
    from gptzoo.zoo.context import policies_for
    from gptzoo.zoo.evaluate import policy_nll

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in random_models(depths):
            say(f"{n_tokens}-token generations on {name}")
            onnx = OnnxModel(export_random(model, Path(tmp)), threads=threads)
            tok = any_vocabulary(model.config.vocab_size)
            for policy in policies_for(onnx.shape):
                single = long_generation(onnx, tok, n_tokens, policy)
                b8 = long_generation(onnx, tok, n_tokens // 4, policy, batch=8) if policy != "exact" else None
                out.append(PolicyRow(name, policy, n_tokens, single, b8, None))
    for v in store.variants():
        if not v.exported or v.card.quantization:
            continue
        say(f"scoring validation text under each policy with {v.id}")
        onnx = OnnxModel(v.path("model.onnx"), threads=threads)
        val = np.asarray(datasets.for_variant(v, data_dir).val).astype(np.int64)
        S, N = 8, min(1024, len(val) // 8)
        streams = np.stack([val[i * (len(val) // S) : i * (len(val) // S) + N] for i in range(S)])
        tok = any_vocabulary(v.card.vocab_size)
        for policy in policies_for(onnx.shape):
            speed = long_generation(onnx, tok, n_tokens, policy)
            out.append(PolicyRow(v.id, policy, n_tokens, speed, None, policy_nll(onnx, streams, policy)))
    return out


SPEC_PROMPTS = ("\n", "ROMEO:", "JULIET:", "KING HENRY VI:", "First Citizen:", "MENENIUS:", "Nurse:", "HAMLET:")


@dataclass
class SpecRow:
    target: str
    draft: str
    batch: int  # rows decoding together, one prompt each (SPEC_PROMPTS)
    k: int  # the most tokens drafted per round (fewer as the engine adapts)
    tokens: int  # greedy tokens per row
    plain_tok_s: float  # the target alone, all rows together
    spec_tok_s: float  # drafted
    speedup: float
    drafted: int  # proposals
    acceptance: float  # of which the target kept
    tokens_per_call: float  # tokens per target call (verifications, batched decodes, prefills)
    identical: bool  # every row's drafted text is the target's own (greedy)


def interleaved(target: StepRunner, tok, prompts, n_tokens: int, draft) -> tuple[float, float, list, list, Batch]:
    """Every prompt's greedy completion of n_tokens, decoded together, by the target alone and with `draft` (a
    gptzoo.zoo.speculative.Draft): the two batches step in turn, each step timed, so a burst of load elsewhere on the
    machine slows both alike. Seconds of each, the completions of each, and the drafting batch (its counters)."""
    batches, rows, seconds = [], [], [0.0, 0.0]
    for d in (None, draft):
        b = Batch(target, tok, policy="half", slots=len(prompts), draft=d)
        rows.append([b.new_row(tok.encode(p), SamplingParams(max_tokens=n_tokens, temperature=0.0)) for p in prompts])
        b.add(rows[-1])
        batches.append(b)
    while any(b.rows for b in batches):
        for i, b in enumerate(batches):
            if b.rows:
                t0 = time.perf_counter()
                b.remove(b.step())
                seconds[i] += time.perf_counter() - t0
    return seconds[0], seconds[1], [r.generated for r in rows[0]], [r.generated for r in rows[1]], batches[1]


def run_speculative(store, threads: int = 1, n_tokens: int = 1000, batches=(1, 8), k: int = 4, repeats: int = 3,
                    say=lambda m: None) -> list[SpecRow]:
    """Every (target, draft) pair of the store's exported variants with one tokenizer, the draft shallower: greedy
    tokens/s with and without the draft at each batch size (medians of `repeats` runs, each stepping the two in
    turn; the speed-up is the median of the runs' ratios), acceptance and tokens per target call."""
    from gptzoo.zoo.runtime import open_variant
    from gptzoo.zoo.speculative import Draft
    from gptzoo.zoo.tokenizers import from_spec

    variants = sorted((v for v in store.variants() if v.exported and not v.card.quantization),
                      key=lambda v: v.card.n_layer)
    models = {v.id: open_variant(v, device="cpu", threads=threads) for v in variants}
    out = []
    for t in variants:
        tok = from_spec(t.card.tokenizer)
        for d in variants:
            if d.card.n_layer >= t.card.n_layer or d.card.tokenizer != t.card.tokenizer:
                continue
            for batch in batches:
                say(f"{t.id} drafted by {d.id}, batch {batch}")
                prompts = [SPEC_PROMPTS[i % len(SPEC_PROMPTS)] for i in range(batch)]
                draft = Draft(models[d.id], k)
                runs = [interleaved(models[t.id], tok, prompts, n_tokens, draft) for _ in range(repeats)]
                plain_s, spec_s = (statistics.median(r[i] for r in runs) for i in (0, 1))
                b = runs[-1][4]  # greedy: every run drafts and accepts alike
                n = sum(len(g) for g in runs[-1][3])
                out.append(SpecRow(t.id, d.id, batch, k, n // batch, n / plain_s, n / spec_s,
                                   statistics.median(r[0] / r[1] for r in runs), b.drafted,
                                   b.accepted / b.drafted if b.drafted else 0.0, n / b.calls,
                                   all(r[2] == r[3] for r in runs)))
    return out
