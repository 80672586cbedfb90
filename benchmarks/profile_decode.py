"""Where a decode step's time goes: onnxruntime's per-operator profile plus the Python loop around it.

    python benchmarks/profile_decode.py --layers 12 --batch 1 32 --context 128

It measures the machine's memory read bandwidth first (the floor of a batch-1 step is reading every weight once).
For a random-weight 384-wide model at each depth, it times one cached decode call alone (`OnnxModel.run`: IO binding,
the slot cache written in place) and the whole `Batch.step` (sampling, masks, bookkeeping), then profiles the session
and sums kernel time by operator type.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from gptzoo.measure.bench import any_vocabulary, export_random, random_models, read_bandwidth_gbs
from gptzoo.zoo.generate import Batch
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.step_contract import Call


def decode_call(model: OnnxModel, batch: int, context: int) -> tuple[object, Call]:
    """A slot cache of `batch` rows holding `context` tokens each (random keys/values), and the call that decodes one
    more token in every row."""
    cache = model.new_cache(batch)
    for i, a in enumerate(cache.arrays):
        a[:] = np.random.default_rng(i).standard_normal(a.shape, dtype=np.float32)
    call = Call.decode(0, np.ones(batch, np.int64), np.full(batch, context), np.ones(batch, bool))
    return cache, call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 12])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    bandwidth = read_bandwidth_gbs()
    print(f"memory read bandwidth (one thread, numpy sum over 400 MiB): {bandwidth:.1f} GB/s", flush=True)
    for name, torch_model in random_models(tuple(args.layers)):
        path = export_random(torch_model, tmp)
        model = OnnxModel(path, threads=1)
        weights_mb = sum(p.numel() for p in torch_model.parameters()) * 4 / 1e6
        for b in args.batch:
            cache, call = decode_call(model, b, args.context)
            for _ in range(5):
                model.run(cache, call)
            t = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                model.run(cache, call)
                t.append(time.perf_counter() - t0)
            run_ms = statistics.median(t) * 1000
            tok = any_vocabulary(65)
            batch = Batch(model, tok, policy="half", slots=b)
            rows = [batch.new_row([1] * args.context, SamplingParams(max_tokens=args.runs + 2, temperature=0.0))
                    for _ in range(b)]
            batch.add(rows)
            batch.step()  # the prompts
            st = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                batch.step()
                st.append(time.perf_counter() - t0)
            step_ms = statistics.median(st) * 1000
            # operator profile
            profiled = OnnxModel(path, device="cpu", threads=1, profile_prefix=str(tmp / f"p{b}"))
            for _ in range(args.runs):
                profiled.run(cache, call)
            events = json.loads(Path(profiled.session.end_profiling()).read_text())
            by_op = defaultdict(float)
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    by_op[e["args"]["op_name"]] += e["dur"]
            total = sum(by_op.values())
            top = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(by_op.items(), key=lambda x: -x[1])[:6])
            print(f"{name} batch {b} context {args.context}: session.run {run_ms:.3f} ms, Batch.step {step_ms:.3f} ms "
                  f"(python {step_ms - run_ms:+.3f} ms); fp32 weights {weights_mb:.0f} MB, streaming floor "
                  f"{weights_mb / bandwidth:.2f} ms, step ÷ floor {step_ms / (weights_mb / bandwidth):.2f}; kernels: "
                  f"{top}", flush=True)


if __name__ == "__main__":
    main()
