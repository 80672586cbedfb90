"""Training step time of the oss block family vs gpt2 at the cpu preset (docs/oss.md): median of a few
forward+backward+AdamW steps on random tokens, same width, depth, batch and context. Run on a quiet machine:
    .venv/bin/python benchmarks/oss_step.py [layers] [steps]
"""

import statistics
import sys
import time

import torch

from gptzoo.trainer.config import TrainConfig
from gptzoo.zoo.arch import make_model


def median_step_ms(arch: str, layers: int, steps: int) -> tuple[float, int]:
    cfg = TrainConfig.from_preset("cpu", layers, cuda_available=False, arch=arch)
    torch.manual_seed(0)
    model = make_model(cfg.model_args(65)).train()
    opt = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), "cpu")
    x = torch.randint(0, 65, (cfg.batch_size, cfg.block_size + 1))
    times = []
    for i in range(steps + 2):  # the first two warm up
        t = time.perf_counter()
        _, loss = model(x[:, :-1].contiguous(), x[:, 1:].contiguous())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, model.num_params()


if __name__ == "__main__":
    layers, steps = (int(a) for a in (sys.argv[1:] + ["4", "10"])[:2])
    results = {arch: median_step_ms(arch, layers, steps) for arch in ("gpt2", "oss")}
    for arch, (ms, params) in results.items():
        print(f"{arch}: {ms:.1f} ms/step, {params:,} params")
    print(f"oss/gpt2 step time: {results['oss'][0] / results['gpt2'][0]:.2f}")
