"""`gptzoo eval`: recompute a variant's losses from its checkpoint on the windows its card was scored on."""

from __future__ import annotations

from pathlib import Path

from gptzoo.zoo import checkpoint
from gptzoo.zoo import datasets as dsmod
from gptzoo.zoo.card import EvalFacts
from gptzoo.zoo.evaluate import estimate
from gptzoo.zoo.store import Variant


def evaluate_variant(variant: Variant, data_dir: Path | None = None, full: bool = False) -> dict:
    """{'train': loss, 'val': loss} of the best checkpoint, on the card's eval windows (or every window with `full`)."""
    _, model = checkpoint.load_variant(variant)
    dataset = dsmod.for_variant(variant, data_dir)
    ev = variant.card.eval or EvalFacts()
    windows = None if full else ev.windows_per_split
    return estimate(model, {"train": dataset.train, "val": dataset.val}, ev.batch_size, windows)
