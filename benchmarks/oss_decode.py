"""Decode speed of the oss block family vs gpt2 through the exported graph (docs/oss.md, issue 25's serving goal):
random weights, exported to ONNX, onnxruntime on the CPU with 1 intra-op thread. Each round prefills `--start`
tokens per row, then decodes one token per row per step from position `--start` to block_size - 1, so the cache
each step reads grows over the realistic range; rounds alternate the architectures (and batches) in one process.
Reported: the median over rounds of each round's median ms per step. Both families get the same depth, width and
query heads; oss adds --kv-heads and --window (and --experts/--experts-per-token: dense or, with --moe-op, through
onnxruntime's MoE op). Run on a quiet machine, e.g. the issue's serving goal:
    taskset -c 1 .venv/bin/python benchmarks/oss_decode.py --layers 12 --width 384 --heads 8 --kv-heads 2 \
        --block 256 --window 128 --rounds 3
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gptzoo.exports.onnx_export import export_model
from gptzoo.zoo.arch import make_model
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.step_contract import Call


def build(arch: str, a: argparse.Namespace, moe_op: bool = False) -> OnnxModel:
    args = dict(n_layer=a.layers, n_embd=a.width, n_head=a.heads, block_size=a.block, vocab_size=65, bias=False,
                dropout=0.0)
    if arch == "oss":
        args |= dict(arch="oss", kv_heads=a.kv_heads, window=a.window, experts=a.experts,
                     experts_per_token=a.experts_per_token)
    torch.manual_seed(0)
    model = make_model(args).eval()
    path = Path(tempfile.mkdtemp()) / "m.onnx"
    export_model(model, path, f"bench-{arch}", **({"moe_op": True} if moe_op else {}))
    return OnnxModel(path, device="cpu", threads=1)


def round_ms(onnx: OnnxModel, batch: int, start: int) -> float:
    """Median ms per decode step of one round: prefill `start` tokens per row, then decode to the window's end."""
    cache = onnx.new_cache(batch)
    onnx.run(cache, Call.fill(0, np.ones((batch, start), np.int64), np.zeros(batch, np.int64)))
    times = []
    for pos in range(start, onnx.shape.block_size):
        t = time.perf_counter()
        onnx.decode(cache, 0, [1] * batch, [pos] * batch)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--experts", type=int, default=0)
    p.add_argument("--experts-per-token", type=int, default=2)
    p.add_argument("--start", type=int, default=64, help="prefilled tokens per row; decoding runs from here")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--onnx", action="append", default=[], metavar="NAME=PATH",
                   help="also time this exported graph (e.g. one exported by an older checkout) in the same rounds")
    p.add_argument("--moe-op", action="store_true", help="compare the MoE model's dense graph with the MoE op's "
                   "instead of gpt2 with oss")
    a = p.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    if a.moe_op:
        engines = {"oss-dense": build("oss", a), "oss-moe-op": build("oss", a, moe_op=True)}
    else:
        engines = {"gpt2": build("gpt2", a), "oss": build("oss", a)}
    for spec in a.onnx:
        name, path = spec.split("=", 1)
        engines[name] = OnnxModel(path, device="cpu", threads=1)
    per_round: dict[tuple[str, int], list[float]] = {(n, b): [] for n in engines for b in batches}
    for _ in range(a.rounds):
        for b in batches:
            for name, onnx in engines.items():
                per_round[name, b].append(round_ms(onnx, b, a.start))
    print(f"{a.layers}L width {a.width}, {a.heads} heads, oss {a.kv_heads} kv heads window {a.window}, "
          f"experts {a.experts}/{a.experts_per_token}, block {a.block}, decoding positions {a.start}..{a.block - 1}, "
          f"{a.rounds} rounds")
    med = {k: statistics.median(v) for k, v in per_round.items()}
    for name in engines:
        print(name, "; ".join(f"batch {b}: {med[name, b]:.3f} ms/step ({b / med[name, b] * 1000:.0f} tok/s, rounds "
                              f"{'/'.join(f'{t:.2f}' for t in per_round[name, b])})" for b in batches))
    base, *others = engines
    for other in others:
        print(f"{other}/{base} tokens/s:", ", ".join(f"batch {b}: {med[base, b] / med[other, b]:.2f}"
                                                    for b in batches))


if __name__ == "__main__":
    main()
