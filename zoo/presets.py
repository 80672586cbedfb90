"""Depth presets: the zoo's canonical depths in width profiles, as plain data.

A preset is a width profile (model width and training recipe) plus what changes with depth (`BY_DEPTH`).

- `cpu` (128 wide at every depth): a context of 128 and a token budget growing with depth (2000 steps at 1 layer to
  4000 at 12), with the learning rates measured per depth (12 layers: 3e-3, beta2 0.95, warmup 200), so that each
  deeper variant is measurably better (docs/quality.md).
  `REFERENCE_MINUTES` is what each depth took on the reference machine, for `gptzoo train` to state its time.
- `nanogpt-cpu`: nanoGPT's exact CPU recipe for shakespeare_char (lr 1e-3 -> 1e-4), kept for comparisons.
- `gpu` (384 wide, up to 5000 steps): nanoGPT's config/train_shakespeare_char.py with dropout growing with depth
  (deeper models overfit tiny-Shakespeare sooner) and early stopping (`patience`).
- `nanogpt-gpu`: nanoGPT's config/train_shakespeare_char.py exactly (dropout 0.2 at every depth, no early stopping).

Any depth >= 1 works: a depth takes the `BY_DEPTH` entry of the deepest canonical depth at or below it. The canonical
depths are what `gptzoo train --all` builds.
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
    patience=0,
)
_CPU = dict(_COMMON, n_embd=128, n_head=4, block_size=64, batch_size=12, max_iters=2000, dropout=0.0, eval_iters=20)
_GPU = dict(_COMMON, n_embd=384, n_head=6, block_size=256, batch_size=64, max_iters=5000, dropout=0.2, eval_iters=200)

PROFILES: dict[str, dict] = {
    # context 128 at every depth (nanoGPT's 64 left depth little to model; tokens per second are the same at 128)
    "cpu": dict(_CPU, learning_rate=4e-3, min_lr=4e-4, block_size=128),
    "nanogpt-cpu": _CPU,
    # patience 4 evaluations (1000 steps): stops 6 and 12 layers >= 40% sooner than 5000 steps (see docs/quality.md)
    "gpu": dict(_GPU, patience=4),
    "nanogpt-gpu": _GPU,
}

# What changes with depth, per profile: (depth, values) in increasing depth. A depth uses the entry of the deepest
# depth listed at or below it.
BY_DEPTH: dict[str, tuple[tuple[int, dict], ...]] = {
    # fmt: off
    # Peak learning rate per depth, measured at 2000 steps (docs/quality.md); the floor stays a tenth of the peak.
    # beta2 0.95 at 12 layers only: measured better there on both seeds, worse at 4 and 6 layers. More steps the
    # deeper (issue 23): at nanoGPT's 2000 steps of 12 x 64 tokens every depth ended equal and 12 layers last.
    "cpu": (
        (1, dict(learning_rate=4e-3, min_lr=4e-4)),
        (4, dict(learning_rate=4e-3, min_lr=4e-4, max_iters=2400, eval_interval=400)),
        (6, dict(learning_rate=4e-3, min_lr=4e-4, max_iters=3000, eval_interval=500)),
        (12, dict(learning_rate=3e-3, min_lr=3e-4, beta2=0.95, warmup_iters=200, max_iters=4000, eval_interval=500)),
    ),
    "gpu": (
        (1, dict(dropout=0.1)),
        (4, dict(dropout=0.2)),
        (6, dict(dropout=0.25)),
        (12, dict(dropout=0.3)),
    ),
    # fmt: on
}


# Minutes one canonical depth's run takes with the profile's own values and torch's default threads (evaluations and
# the final whole-split score included) on the reference machine, 2 cores of an Intel Xeon: one timed
# `gptzoo train --all --preset cpu` (13 min 58 s, docs/quality.md), the machine otherwise quiet; on a machine shared
# with other work the same runs took about twice as long. What `gptzoo train` states before it starts.
REFERENCE_MINUTES: dict[str, dict[int, float]] = {
    "cpu": {1: 0.5, 4: 1.6, 6: 3.2, 12: 8.7},
}
REFERENCE_MACHINE = "the reference machine (2 Intel Xeon cores)"

# The block family's own settings (gptzoo.zoo.arch), per family and profile, on top of the profile: gpt2 has none.
# oss: 2 kv heads (half the cpu profile's 4 query heads, a third of gpu's 6) and a sliding window of half the
# context (gpt-oss's 128 of 256 at gpu), so the sliding layers really are local; dense unless --experts.
_OSS = dict(arch="oss", kv_heads=2, rope_theta=10000.0, experts=0, experts_per_token=2, balance_coef=0.01)
ARCH_VALUES: dict[str, dict[str, dict]] = {
    "gpt2": {},
    "oss": {"cpu": dict(_OSS, window=64), "nanogpt-cpu": dict(_OSS, window=32), "gpu": dict(_OSS, window=128),
            "nanogpt-gpu": dict(_OSS, window=128)},
}


def resolve_profile(name: str, cuda_available: bool) -> str:
    """`auto` means `gpu` when CUDA is there, else `cpu`."""
    if name == "auto":
        return "gpu" if cuda_available else "cpu"
    if name not in PROFILES:
        raise BadValue(f"unknown preset {name!r}; choose one of: auto, {', '.join(PROFILES)}")
    return name


def depth_values(profile: str, n_layer: int) -> dict:
    """The `BY_DEPTH` values for `profile` at depth `n_layer` (empty for a profile that does not vary with depth)."""
    chosen: dict = {}
    for depth, values in BY_DEPTH.get(profile, ()):
        if depth <= n_layer:
            chosen = values
    return dict(chosen)


def preset(profile: str, n_layer: int, arch: str = "gpt2") -> dict:
    """The full set of hyper-parameters for `profile` at depth `n_layer`, for block family `arch`."""
    if n_layer < 1:
        raise BadValue(f"depth must be at least 1 layer, got {n_layer}")
    if profile not in PROFILES:
        raise BadValue(f"unknown preset {profile!r}; choose one of: {', '.join(PROFILES)}")
    if arch not in ARCH_VALUES:
        raise BadValue(f"unknown arch {arch!r}; choose one of: {', '.join(ARCH_VALUES)}")
    values = dict(PROFILES[profile]) | depth_values(profile, n_layer) | {"n_layer": n_layer}
    return values | ARCH_VALUES[arch].get(profile, {})
