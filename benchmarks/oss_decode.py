"""Decode speed of the oss block family vs gpt2 through the exported graph (docs/oss.md): random weights at the cpu
preset's shape, exported to ONNX, then one token per row per step at batch 1 and 32 from position 64 on, onnxruntime
on the CPU with 1 thread. Median ms per step of `steps` steps. Run on a quiet machine:
    .venv/bin/python benchmarks/oss_decode.py [layers] [steps]
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gptzoo.exports.onnx_export import export_model
from gptzoo.trainer.config import TrainConfig
from gptzoo.zoo.arch import make_model
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.step_contract import Call


def decode_ms(arch: str, layers: int, steps: int, batches=(1, 32)) -> dict[int, float]:
    cfg = TrainConfig.from_preset("cpu", layers, cuda_available=False, arch=arch)
    torch.manual_seed(0)
    model = make_model(cfg.model_args(65)).eval()
    path = Path(tempfile.mkdtemp()) / "m.onnx"
    export_model(model, path, f"bench-{arch}")
    onnx = OnnxModel(path, device="cpu", threads=1)
    out = {}
    for b in batches:
        cache = onnx.new_cache(b)
        onnx.run(cache, Call.fill(0, np.zeros((b, 64), np.int64), np.zeros(b, np.int64)))
        times = []
        for i in range(steps):
            t = time.perf_counter()
            onnx.decode(cache, 0, [1] * b, [64 + i % 32] * b)
            times.append(time.perf_counter() - t)
        out[b] = statistics.median(times) * 1000
    return out


if __name__ == "__main__":
    layers, steps = (int(a) for a in (sys.argv[1:] + ["4", "200"])[:2])
    results = {arch: decode_ms(arch, layers, steps) for arch in ("gpt2", "oss")}
    for arch, ms in results.items():
        print(arch, ", ".join(f"batch {b}: {t:.3f} ms/step ({b / t * 1000:.0f} tok/s)" for b, t in ms.items()))
    print("oss/gpt2 tokens/s:", ", ".join(f"batch {b}: {results['gpt2'][b] / results['oss'][b]:.2f}"
                                           for b in results["gpt2"]))
