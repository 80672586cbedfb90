"""Training step time of the oss block family vs gpt2 at the cpu preset (docs/oss.md): forward + backward + AdamW
on random tokens, same width, depth, batch and context, eager and under torch.compile (`train --compile`), in
alternating rounds of a few steps each; prints each setting's median ms/step and the ratios to gpt2's. Pin it to one
core on a quiet machine:
    taskset -c 0 .venv/bin/python benchmarks/oss_step.py [layers] [rounds] [steps per round]
"""

import statistics
import sys
import time

import torch

from gptzoo.trainer.config import TrainConfig
from gptzoo.zoo.arch import make_model


def stepper(arch: str, layers: int, compiled: bool):
    """A function running one training step of a fresh model, warmed up (compiled first when asked)."""
    cfg = TrainConfig.from_preset("cpu", layers, cuda_available=False, arch=arch)
    torch.manual_seed(0)
    raw = make_model(cfg.model_args(65)).train()
    model = torch.compile(raw) if compiled else raw
    opt = raw.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), "cpu")
    x = torch.randint(0, 65, (cfg.batch_size, cfg.block_size + 1))
    inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    def step() -> None:
        _, loss = model(inputs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # compile, allocate
        step()
    return step, raw.num_params()


if __name__ == "__main__":
    layers, rounds, steps = (int(a) for a in (sys.argv[1:] + ["4", "5", "3"][len(sys.argv) - 1 :])[:3])
    torch.set_num_threads(1)
    settings = {(arch, c): stepper(arch, layers, c) for arch in ("gpt2", "oss") for c in (False, True)}
    times = {k: [] for k in settings}
    for _ in range(rounds):
        for k, (step, _) in settings.items():
            t = time.perf_counter()
            for _ in range(steps):
                step()
            times[k].append((time.perf_counter() - t) / steps * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    for (arch, c), (_, params) in settings.items():
        mode = "compiled" if c else "eager"
        print(f"{arch:4} {mode:8} {med[arch, c]:7.1f} ms/step (rounds {', '.join(f'{t:.0f}' for t in times[arch, c])}),"
              f" {params:,} params")
    for c in (False, True):
        mode = "compiled" if c else "eager"
        print(f"oss/gpt2, both {mode}: {med['oss', c] / med['gpt2', c]:.2f}")
    print(f"oss compiled / gpt2 eager: {med['oss', True] / med['gpt2', False]:.2f}")
