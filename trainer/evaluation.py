"""`gptzoo eval`: recompute a variant's losses from its checkpoint on the windows its card was scored on."""

from __future__ import annotations

from pathlib import Path

from gptzoo.zoo import checkpoint
from gptzoo.zoo import datasets as dsmod
from gptzoo.zoo.evaluate import estimate
from gptzoo.zoo.store import Variant


def dataset_for(variant: Variant, data_dir: Path | None = None) -> dsmod.Dataset:
    """The prepared dataset a variant was trained on, refusing one whose source differs."""
    facts = variant.card.get("dataset") or {}
    dataset = dsmod.load(facts.get("name", ""), data_dir)
    if facts.get("sha256") and dataset.meta["sha256"] != facts["sha256"]:
        raise dsmod.DataError(
            f"dataset {dataset.name!r} was prepared from a different source than {variant.id} was trained on "
            f"(sha256 {dataset.meta['sha256'][:12]}… vs {facts['sha256'][:12]}…)"
        )
    return dataset


def evaluate_variant(variant: Variant, data_dir: Path | None = None, full: bool = False) -> dict:
    """{'train': loss, 'val': loss} of the best checkpoint, on the card's eval windows (or every window with `full`)."""
    _, model = checkpoint.load_variant(variant)
    dataset = dataset_for(variant, data_dir)
    ev = variant.card.get("eval") or {}
    batch = int(ev.get("batch_size", 12))
    windows = None if full else ev.get("windows_per_split")
    return estimate(model, {"train": dataset.train, "val": dataset.val}, batch, windows)
