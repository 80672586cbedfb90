"""Presets are plain data: the cpu recipe per depth (context and steps growing with depth), nanoGPT's exact recipes
kept by name, the gpu profile's regularisation growing with depth and its early stopping, and the expected training
time `gptzoo train` states."""

import pytest

from gptzoo.trainer.config import TrainConfig, time_statement
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.presets import (
    BY_DEPTH,
    CANONICAL_DEPTHS,
    PROFILES,
    REFERENCE_MINUTES,
    depth_values,
    preset,
    resolve_profile,
)

# nanoGPT's README CPU command over config/train_shakespeare_char.py
NANOGPT_CPU = dict(n_embd=128, n_head=4, block_size=64, batch_size=12, max_iters=2000, dropout=0.0, eval_iters=20,
                   eval_interval=250, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, weight_decay=0.1, beta1=0.9,
                   beta2=0.99, grad_clip=1.0, gradient_accumulation_steps=1, bias=False, patience=0)
NANOGPT_GPU = NANOGPT_CPU | dict(n_embd=384, n_head=6, block_size=256, batch_size=64, max_iters=5000, dropout=0.2,
                                 eval_iters=200)


@pytest.mark.parametrize("depth", [1, 4, 6, 12, 7, 48])
def test_nanogpt_recipes_stay_exact_at_every_depth(depth):
    assert preset("nanogpt-cpu", depth) == NANOGPT_CPU | {"n_layer": depth}
    assert preset("nanogpt-gpu", depth) == NANOGPT_GPU | {"n_layer": depth}


# The cpu preset per canonical depth, as measured in docs/quality.md (issue 23: depth that pays). Width, heads and
# batch stay nanoGPT's at every depth; the context is 128 at every depth, and a deeper variant gets more steps.
CPU_RECIPE = {
    1: dict(learning_rate=4e-3, min_lr=4e-4, block_size=128),
    4: dict(learning_rate=4e-3, min_lr=4e-4, block_size=128, max_iters=2400, eval_interval=400),
    6: dict(learning_rate=4e-3, min_lr=4e-4, block_size=128, max_iters=3000, eval_interval=500),
    12: dict(learning_rate=3e-3, min_lr=3e-4, beta2=0.95, warmup_iters=200, block_size=128, max_iters=4000,
             eval_interval=500),
}


@pytest.mark.parametrize("depth", CANONICAL_DEPTHS)
def test_cpu_preset_is_the_measured_recipe_per_depth(depth):
    assert preset("cpu", depth) == NANOGPT_CPU | CPU_RECIPE[depth] | {"n_layer": depth}


def test_cpu_preset_keeps_the_width_and_gives_deeper_variants_more_tokens():
    """The variants differ by depth: same width, heads and batch; context and tokens never shrink with depth."""
    recipes = [TrainConfig.from_preset("cpu", d, cuda_available=False) for d in CANONICAL_DEPTHS]
    assert {(c.n_embd, c.n_head, c.batch_size) for c in recipes} == {(128, 4, 12)}
    tokens = [c.tokens() for c in recipes]
    blocks = [c.block_size for c in recipes]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens) and blocks == sorted(blocks)


def test_cpu_beta2_is_lower_only_where_it_was_measured_better():
    """beta2 0.95 won at 12 layers on both seeds and lost at 4 and 6 layers (docs/quality.md)."""
    assert [preset("cpu", d)["beta2"] for d in (1, 4, 6, 11, 12, 24)] == [0.99, 0.99, 0.99, 0.99, 0.95, 0.95]


def test_a_depth_between_canonical_ones_takes_the_shallower_entry():
    assert depth_values("cpu", 5) == depth_values("cpu", 4) and preset("cpu", 5)["block_size"] == 128
    assert depth_values("gpu", 13) == depth_values("gpu", 100) == depth_values("gpu", 12)
    assert depth_values("nanogpt-cpu", 12) == {}
    assert [d for d, _ in BY_DEPTH["cpu"]] == list(CANONICAL_DEPTHS)


def test_gpu_regularisation_grows_with_depth_and_it_stops_early():
    dropouts = [preset("gpu", d)["dropout"] for d in range(1, 25)]
    assert dropouts == sorted(dropouts) and dropouts[0] < dropouts[-1]
    assert preset("gpu", 6)["dropout"] >= PROFILES["nanogpt-gpu"]["dropout"]
    assert preset("gpu", 6)["patience"] > 0 and preset("cpu", 6)["patience"] == 0


def test_train_config_from_preset_and_overrides():
    cfg = TrainConfig.from_preset("cpu", 12, cuda_available=False)
    assert cfg.preset == "cpu" and cfg.learning_rate == preset("cpu", 12)["learning_rate"]
    assert TrainConfig.from_preset("auto", 4, cuda_available=True).preset == "gpu"
    assert TrainConfig.from_preset("auto", 4, cuda_available=False).preset == "cpu"
    cfg = TrainConfig.from_preset("gpu", 6, cuda_available=False, patience=0, learning_rate=5e-4)
    assert cfg.patience == 0 and cfg.learning_rate == 5e-4 and cfg.dropout == preset("gpu", 6)["dropout"]


def test_unknown_preset_names_the_choices():
    with pytest.raises(BadValue, match="choose one of: auto, cpu, nanogpt-cpu, gpu, nanogpt-gpu"):
        resolve_profile("tpu", False)
    with pytest.raises(BadValue, match="at least 1 layer"):
        preset("cpu", 0)


def test_expected_time_is_the_reference_run_scaled_by_parameters_and_tokens():
    """A canonical depth's own recipe states the measured minutes; other shapes scale from the depth at or below."""
    for depth, minutes in REFERENCE_MINUTES["cpu"].items():
        assert TrainConfig.from_preset("cpu", depth, cuda_available=False).expected_minutes() == pytest.approx(minutes)
    four = REFERENCE_MINUTES["cpu"][4]
    half = TrainConfig.from_preset("cpu", 4, cuda_available=False, max_iters=preset("cpu", 4)["max_iters"] // 2)
    assert half.expected_minutes() == pytest.approx(four / 2)
    assert TrainConfig.from_preset("cpu", 5, cuda_available=False).expected_minutes() == pytest.approx(four * 5 / 4)
    assert TrainConfig.from_preset("gpu", 4, cuda_available=False).expected_minutes() is None


def test_time_statement_names_each_run_and_the_total():
    configs = [TrainConfig.from_preset("cpu", d, cuda_available=False) for d in CANONICAL_DEPTHS]
    total = sum(REFERENCE_MINUTES["cpu"].values())
    said = time_statement(configs)
    assert f"about {total:.0f} min in all" in said
    assert all(f"{d} layer" in said for d in CANONICAL_DEPTHS)
    one = time_statement(configs[1:2])
    assert f"about {REFERENCE_MINUTES['cpu'][4]:.1f} min" in one and "2,400 steps of 12x128 tokens" in one
    assert "no reference training time for preset gpu" in time_statement(
        [TrainConfig.from_preset("gpu", 4, cuda_available=False)])
