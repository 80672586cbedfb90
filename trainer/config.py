"""The training configuration: a preset (zoo.presets) with the user's overrides on top."""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields

from gptzoo.zoo.arch import ARCHES
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.model import GPTConfig
from gptzoo.zoo.oss import OSSConfig
from gptzoo.zoo.presets import REFERENCE_MACHINE, REFERENCE_MINUTES, preset, resolve_profile


@dataclass
class TrainConfig:
    # model
    n_layer: int = 4  # depth
    n_head: int = 4  # attention heads
    n_embd: int = 128  # width
    block_size: int = 64  # context length in tokens
    dropout: float = 0.0  # dropout while training
    bias: bool = False  # biases in Linear/LayerNorm
    arch: str = "gpt2"  # block family: gpt2 (nanoGPT's) or oss (GPT-OSS-style, docs/oss.md); the rest is oss only
    kv_heads: int = 0  # key/value heads (grouped-query attention); 0 = as many as n_head
    window: int = 64  # sliding-window length of the even layers
    rope_theta: float = 10000.0  # RoPE base
    experts: int = 0  # MoE experts per layer (0 = dense MLP)
    experts_per_token: int = 2  # experts each token is routed to
    balance_coef: float = 0.01  # weight of the MoE load-balancing loss
    last_full: bool = True  # the last layer attends fully (odd depths: a 1-layer model sees its whole context)
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
        arch = overrides.get("arch") or "gpt2"
        values = {k: v for k, v in preset(name, n_layer, arch).items() if k in known} | {"preset": name}
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
        if self.arch not in ARCHES:
            raise BadValue(f"unknown arch {self.arch!r}: use one of {', '.join(ARCHES)}")
        if self.arch == "oss":
            try:
                OSSConfig.from_dict(self.model_args(1))
            except ValueError as e:
                raise BadValue(f"oss model: {e}") from e
        if self.patience < 0:
            raise BadValue(f"patience must be >= 0 (0 turns early stopping off), got {self.patience}")

    def approx_params(self) -> int:
        """Parameters in the transformer blocks (attention 4·d², MLP 8·d² per layer): what makes a run large."""
        return 12 * self.n_layer * self.n_embd**2

    def tokens(self) -> int:
        """Training tokens in all (one process): steps x batch x context x accumulation."""
        return self.max_iters * self.batch_size * self.block_size * self.gradient_accumulation_steps

    def expected_minutes(self) -> float | None:
        """About how long this run takes on the reference machine: the measured minutes of the preset's own run at
        the deepest canonical depth at or below this one (zoo.presets.REFERENCE_MINUTES), scaled by block
        parameters and by tokens, which is what the step cost follows at these sizes. None without a reference."""
        measured = REFERENCE_MINUTES.get(self.preset, {})
        depths = [d for d in measured if d <= self.n_layer]
        if not depths:
            return None
        ref = TrainConfig(**{k: v for k, v in preset(self.preset, max(depths)).items() if k in _FIELDS})
        return measured[max(depths)] * self.approx_params() / ref.approx_params() * self.tokens() / ref.tokens()

    def model_args(self, vocab_size: int) -> dict:
        """The model's arguments (gptzoo.zoo.arch): gpt2's exactly as before (no `arch` key, so nanoGPT reads
        them), oss's with the family's own fields."""
        names = set(inspect.signature(OSSConfig if self.arch == "oss" else GPTConfig).parameters)
        return {k: v for k, v in asdict(self).items() if k in names} | {"vocab_size": vocab_size}

    def to_dict(self) -> dict:
        return asdict(self)


_FIELDS = {f.name for f in fields(TrainConfig)}


def time_statement(configs: list[TrainConfig]) -> str:
    """What `gptzoo train` says before it starts: the expected time of each run and of all of them."""
    known = [(c, c.expected_minutes()) for c in configs]
    if any(m is None for _, m in known):
        measured = ", ".join(REFERENCE_MINUTES)
        return f"no reference training time for preset {configs[0].preset} (measured for: {measured})"
    each = [f"{c.n_layer} layer{'s' if c.n_layer > 1 else ''}: {m:.1f} min ({c.max_iters:,} steps of "
            f"{c.batch_size}x{c.block_size} tokens)" for c, m in known]
    total = sum(m for _, m in known)
    if len(known) == 1:
        c = configs[0]
        return (f"expected time: about {total:.1f} min on {REFERENCE_MACHINE} for {c.n_layer} layer"
                f"{'s' if c.n_layer > 1 else ''}, {c.max_iters:,} steps of {c.batch_size}x{c.block_size} tokens")
    return f"expected time: about {total:.0f} min in all on {REFERENCE_MACHINE}: {', '.join(each)}"
