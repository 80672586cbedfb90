"""Checkpoints, written by the trainer and read by eval, export and the torch backend.

nanoGPT's layout (`model`, `optimizer`, `model_args`, `iter_num`, `best_val_loss`, `config`) plus
what an exact resume needs (RNG states) and what serving needs (the tokenizer spec). Written atomically and read
with `weights_only=True`, so a checkpoint from elsewhere cannot run code on load."""

from __future__ import annotations

from pathlib import Path

import torch

from gptzoo.zoo import atomic
from gptzoo.zoo.arch import make_model
from gptzoo.zoo.errors import GptzooError, first_line
from gptzoo.zoo.model import GPT


class CheckpointError(GptzooError):
    """A checkpoint is missing, unreadable or does not match what it should hold."""


def save(obj: dict, path: Path) -> None:
    atomic.torch_save(obj, path)


def load(path: Path) -> dict:
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(e)}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise CheckpointError(f"{path} is not a gptzoo/nanoGPT checkpoint (no model or model_args)")
    return ckpt


def strip_compile_prefix(state: dict) -> dict:
    """torch.compile saves weights as `_orig_mod.<name>`; plain models want `<name>`."""
    prefix = "_orig_mod."
    return {k.removeprefix(prefix): v for k, v in state.items()}


def build_model(ckpt: dict) -> GPT:
    """The model a checkpoint holds, in eval mode on the CPU."""
    try:
        model = make_model(ckpt["model_args"])
        model.load_state_dict(strip_compile_prefix(ckpt["model"]))
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint weights do not fit its model_args: {first_line(e)}") from e
    return model.eval()


CARD_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")


def load_variant(variant) -> tuple[dict, GPT]:
    """The best checkpoint of a store variant and its model, checked against the variant's card."""
    from gptzoo.zoo.sources import sha256_file
    from gptzoo.zoo.store import CKPT_BEST

    path = variant.path(CKPT_BEST)
    if not path.is_file():
        raise CheckpointError(f"variant {variant.id} has no checkpoint ({path} is missing)")
    expected = variant.card.checkpoint_sha256
    if expected and sha256_file(path) != expected:
        raise CheckpointError(f"{path} does not match its card (sha256 differs): was it replaced or corrupted?")
    ckpt = load(path)
    diff = [k for k in CARD_FIELDS if ckpt["model_args"].get(k) != getattr(variant.card, k)]
    if diff:
        shown = ", ".join(f"{k} {ckpt['model_args'].get(k)} vs card {getattr(variant.card, k)}" for k in diff)
        raise CheckpointError(f"{path} does not match its card: {shown}")
    return ckpt, build_model(ckpt)
