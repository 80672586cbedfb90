"""Depth presets: the zoo's canonical depths in two width profiles, as plain data.

A preset is a width profile (model width and training recipe) at a depth. `cpu` is nanoGPT's CPU recipe for
shakespeare_char (4 layers reach val ~1.88 in 2000 iterations); `gpu` is nanoGPT's config/train_shakespeare_char.py
(6 layers reach val ~1.47). Any depth >= 1 works; the canonical ones are what `gptzoo train --all` builds.
"""

from __future__ import annotations

from gptzoo.zoo.errors import BadValue

CANONICAL_DEPTHS: tuple[int, ...] = (1, 4, 6, 12)

_COMMON = dict(
    learning_rate=1e-3,
    min_lr=1e-4,
    warmup_iters=100,
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.99,
    grad_clip=1.0,
    gradient_accumulation_steps=1,
    eval_interval=250,
    bias=False,
)

PROFILES: dict[str, dict] = {
    # fmt: off
    "cpu": dict(_COMMON, n_embd=128, n_head=4, block_size=64, batch_size=12, max_iters=2000, dropout=0.0,
                eval_iters=20),
    "gpu": dict(_COMMON, n_embd=384, n_head=6, block_size=256, batch_size=64, max_iters=5000, dropout=0.2,
                eval_iters=200),
    # fmt: on
}


def resolve_profile(name: str, cuda_available: bool) -> str:
    """`auto` means `gpu` when CUDA is there, else `cpu`."""
    if name == "auto":
        return "gpu" if cuda_available else "cpu"
    if name not in PROFILES:
        raise BadValue(f"unknown preset {name!r}; choose one of: auto, {', '.join(PROFILES)}")
    return name


def preset(profile: str, n_layer: int) -> dict:
    """The full set of hyper-parameters for `profile` at depth `n_layer`."""
    if n_layer < 1:
        raise BadValue(f"depth must be at least 1 layer, got {n_layer}")
    if profile not in PROFILES:
        raise BadValue(f"unknown preset {profile!r}; choose one of: {', '.join(PROFILES)}")
    return dict(PROFILES[profile], n_layer=n_layer)
