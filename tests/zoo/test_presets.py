"""Presets are plain data: the cpu recipe per depth, nanoGPT's exact recipes kept by name, the gpu profile's
regularisation growing with depth and its early stopping."""

import pytest

from gptzoo.trainer.config import TrainConfig
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.presets import BY_DEPTH, CANONICAL_DEPTHS, PROFILES, depth_values, preset, resolve_profile

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


@pytest.mark.parametrize("depth", CANONICAL_DEPTHS)
def test_cpu_preset_changes_only_what_does_not_cost_step_time(depth):
    """Same model, batch and steps as nanoGPT's CPU recipe (so the same cost per step); only the schedule differs."""
    ours, theirs = preset("cpu", depth), preset("nanogpt-cpu", depth)
    changed = {k for k in ours if ours[k] != theirs[k]}
    assert changed and changed <= {"learning_rate", "min_lr", "warmup_iters", "beta2", "weight_decay"}
    assert ours["learning_rate"] > theirs["learning_rate"]


def test_cpu_beta2_is_lower_only_where_it_was_measured_better():
    """beta2 0.95 won at 12 layers on both seeds and lost at 4 and 6 layers (docs/quality.md)."""
    assert [preset("cpu", d)["beta2"] for d in (1, 4, 6, 11, 12, 24)] == [0.99, 0.99, 0.99, 0.99, 0.95, 0.95]


def test_a_depth_between_canonical_ones_takes_the_shallower_entry():
    assert depth_values("cpu", 5) == depth_values("cpu", 4)
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
