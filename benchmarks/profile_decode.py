"""Where a decode step's time goes: onnxruntime's per-operator profile plus the Python loop around it.

    python benchmarks/profile_decode.py --layers 12 --batch 1 32 --context 128

For a random-weight 384-wide model at each depth, it times `session.run` alone and the whole `Batch.step` (sampling,
masks, cache bookkeeping), then profiles the session and sums kernel time by operator type.
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
import onnxruntime as ort

from gptzoo.measure.bench import any_vocabulary, export_random, random_models
from gptzoo.zoo.generate import Batch
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.step_contract import attention_bias, input_names


def feeds_for(model: OnnxModel, batch: int, context: int) -> dict:
    s = model.shape
    past = [np.random.default_rng(i).standard_normal((batch, s.n_head, context, s.head_dim), dtype=np.float32)
            for i in range(2 * s.n_layer)]
    ids, pos = np.ones((batch, 1), np.int64), np.full((batch, 1), context, np.int64)
    bias = attention_bias(np.zeros(batch, int), context, 1)
    return dict(zip(input_names(s.n_layer), [ids, pos, bias, *past], strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 12])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    for name, torch_model in random_models(tuple(args.layers)):
        path = export_random(torch_model, tmp)
        model = OnnxModel(path, threads=1)
        weights_mb = sum(p.numel() for p in torch_model.parameters()) * 4 / 1e6
        for b in args.batch:
            feeds = feeds_for(model, b, args.context)
            for _ in range(5):
                model.session.run(None, feeds)
            t = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                model.session.run(None, feeds)
                t.append(time.perf_counter() - t0)
            run_ms = statistics.median(t) * 1000
            tok = any_vocabulary(65)
            batch = Batch(model, tok, policy="half")
            rows = [batch.new_row([1] * args.context, SamplingParams(max_tokens=args.runs + 2, temperature=0.0))
                    for _ in range(b)]
            batch.add(rows)
            st = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                batch.step()
                st.append(time.perf_counter() - t0)
            step_ms = statistics.median(st) * 1000
            # operator profile
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
            so.enable_profiling, so.profile_file_prefix = True, str(tmp / f"p{b}")
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            for _ in range(args.runs):
                sess.run(None, feeds)
            events = json.loads(Path(sess.end_profiling()).read_text())
            by_op = defaultdict(float)
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    by_op[e["args"]["op_name"]] += e["dur"]
            total = sum(by_op.values())
            top = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(by_op.items(), key=lambda x: -x[1])[:6])
            print(f"{name} batch {b} context {args.context}: session.run {run_ms:.3f} ms, Batch.step {step_ms:.3f} ms "
                  f"(python {step_ms - run_ms:+.3f} ms); fp32 weights {weights_mb:.0f} MB; kernels: {top}", flush=True)


if __name__ == "__main__":
    main()
