"""In-process time to the first token of one exported variant, many times: the engine's TTFT without the HTTP side.

    taskset -c 0 .venv/bin/python benchmarks/engine_ttft.py <store>/<variant> [--prompt 64] [--samples 400]

`gptzoo bench` gives TTFT as the median of three runs, too few to see a 5% change on a shared machine; this prints
the median of `--samples` greedy prefill + first-token runs (one row, a fresh Batch each, after 20 warm-up runs).
Run it with two checkouts' interpreters in alternation to compare them (docs/benchmarks.md, issue 24)."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from gptzoo.measure.bench import any_vocabulary, decode_run
from gptzoo.zoo.runtime import OnnxModel

ap = argparse.ArgumentParser()
ap.add_argument("variant", type=Path, help="a variant's folder holding model.onnx")
ap.add_argument("--prompt", type=int, default=64)
ap.add_argument("--samples", type=int, default=400)
args = ap.parse_args()
model = OnnxModel(args.variant / "model.onnx", device="cpu", threads=1)
tok = any_vocabulary(model.shape.vocab_size)
for _ in range(20):
    decode_run(model, tok, 1, 2, args.prompt)
times = [decode_run(model, tok, 1, 2, args.prompt, seed=i)[0] for i in range(args.samples)]
print(json.dumps({"ttft_ms_median": statistics.median(times) * 1000, "samples": args.samples}))
