"""`gptzoo eval`: recompute a variant's losses from its checkpoint on the windows its card was scored on."""

from __future__ import annotations

from pathlib import Path

from gptzoo.trainer import data as datamod
from gptzoo.zoo import checkpoint
from gptzoo.zoo import datasets as dsmod
from gptzoo.zoo.card import EvalFacts
from gptzoo.zoo.evaluate import estimate
from gptzoo.zoo.store import Variant


def dataset_for(variant: Variant, data_dir: Path | None = None, say=None) -> dsmod.Dataset:
    """The dataset the variant was scored on, prepared first when it is a built-in one that is not prepared yet;
    refused when it was prepared from another source than the card's."""
    if variant.card.dataset is not None:
        datamod.ensure(variant.card.dataset.name, data_dir, say)
    return dsmod.for_variant(variant, data_dir)


def windows(ev: EvalFacts, full: bool) -> dict[str, int | None]:
    """Windows per split that reproduce the card's figures (None: every window)."""
    if full:
        return {"train": None, "val": None}
    train = ev.train_windows if ev.train_windows is not None else ev.windows_per_split
    return {"train": train, "val": ev.windows_per_split}


def evaluate_variant(variant: Variant, data_dir: Path | None = None, full: bool = False, say=None) -> dict:
    """{'train': loss, 'val': loss} of the best checkpoint on the card's windows (or every window with `full`)."""
    _, model = checkpoint.load_variant(variant)
    dataset = dataset_for(variant, data_dir, say)
    ev = variant.card.eval or EvalFacts()
    splits = {"train": dataset.train, "val": dataset.val}
    return {k: estimate(model, {k: splits[k]}, ev.batch_size, w)[k] for k, w in windows(ev, full).items()}
