"""The training configuration: a preset (zoo.presets) with the user's overrides on top."""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields

from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.presets import preset, resolve_profile


@dataclass
class TrainConfig:
    # model
    n_layer: int = 4  # depth
    n_head: int = 4  # attention heads
    n_embd: int = 128  # width
    block_size: int = 64  # context length in tokens
    dropout: float = 0.0  # dropout while training
    bias: bool = False  # biases in Linear/LayerNorm
    # data
    dataset: str = "shakespeare_char"  # prepared dataset name (see `gptzoo data prepare`)
    batch_size: int = 12  # sequences per micro-batch (per process under DDP)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    # optimizer and schedule
    max_iters: int = 2000  # optimizer steps in all
    learning_rate: float = 1e-3  # peak learning rate, reached after warmup
    min_lr: float = 1e-4  # floor of the cosine decay, reached at max_iters
    warmup_iters: int = 100  # linear warmup steps
    weight_decay: float = 0.1  # AdamW decay on >= 2-D weights only
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # clip the global grad norm to this (0 disables)
    # evaluation
    eval_interval: int = 250  # evaluate (and save) every this many steps, and at the end
    eval_iters: int = 20  # batches per split per evaluation (fixed windows, so evaluations compare exactly)
    patience: int = 0  # stop after this many evaluations without a new best validation loss (0: never)
    # run
    seed: int = 1337  # model init, dropout and data order all follow from it
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    compile: bool = False  # torch.compile the model
    preset: str = "cpu"  # the width profile these values started from

    @classmethod
    def from_preset(cls, profile: str, n_layer: int, cuda_available: bool, **overrides) -> TrainConfig:
        name = resolve_profile(profile, cuda_available)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in preset(name, n_layer).items() if k in known} | {"preset": name}
        values.update({k: v for k, v in overrides.items() if v is not None})
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "gradient_accumulation_steps",
                    "max_iters", "eval_interval", "eval_iters")
        for name in positive:
            if getattr(self, name) < 1:
                raise BadValue(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise BadValue(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not (0 < self.min_lr <= self.learning_rate):
            raise BadValue(f"need 0 < min_lr <= learning_rate, got {self.min_lr} and {self.learning_rate}")
        if self.warmup_iters < 0 or not 0 <= self.dropout < 1:
            raise BadValue("warmup_iters must be >= 0 and dropout in [0, 1)")
        if self.patience < 0:
            raise BadValue(f"patience must be >= 0 (0 turns early stopping off), got {self.patience}")

    def approx_params(self) -> int:
        """Parameters in the transformer blocks (attention 4·d², MLP 8·d² per layer): what makes a run large."""
        return 12 * self.n_layer * self.n_embd**2

    def model_args(self, vocab_size: int) -> dict:
        from gptzoo.zoo.model import GPTConfig

        names = set(inspect.signature(GPTConfig).parameters)
        return {k: v for k, v in asdict(self).items() if k in names} | {"vocab_size": vocab_size}

    def to_dict(self) -> dict:
        return asdict(self)
