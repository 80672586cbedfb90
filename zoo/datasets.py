"""Prepared datasets on disk: token ids in two uint16 files (90% train, 10% val) plus `meta.json`.

    <data-dir>/<name>/train.bin  val.bin  meta.json

`meta.json` is written last (see gptzoo.zoo.prepare), so a folder without it is an unfinished preparation and is
never loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptzoo.zoo import sources
from gptzoo.zoo.errors import GptzooError
from gptzoo.zoo.names import check_name
from gptzoo.zoo.store import gptzoo_home

DATA_ENV = "GPTZOO_DATA"


class DataError(GptzooError):
    """A dataset is unknown, missing, corrupt or cannot be prepared."""


def default_data_dir() -> Path:
    """$GPTZOO_DATA, else $GPTZOO_HOME/data, else ~/.gptzoo/data."""
    return Path(os.environ.get(DATA_ENV) or gptzoo_home() / "data").expanduser()


@dataclass
class Dataset:
    meta: dict
    train: np.memmap
    val: np.memmap

    @property
    def name(self) -> str:
        return self.meta["name"]


def load(name: str, data_dir: Path | None = None, verify: bool = True) -> Dataset:
    """Open a prepared dataset; with `verify` the token files are checked against the sha256 in meta.json."""
    folder = (data_dir or default_data_dir()) / check_name(name, "dataset name")
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"dataset {name!r} is not prepared in {folder.parent} (run `gptzoo data prepare {name}`)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise DataError(f"{meta_path} is corrupt: {e}") from e
    splits = {}
    for split in ("train", "val"):
        path = folder / f"{split}.bin"
        n = meta.get(f"n_{split}")
        if not path.is_file() or path.stat().st_size != 2 * (n or -1):
            raise DataError(f"{path} is missing or truncated; prepare the dataset again")
        if verify and sources.sha256_file(path) != meta.get(f"{split}_sha256"):
            raise DataError(f"{path} is corrupt (sha256 differs from meta.json); prepare the dataset again")
        splits[split] = np.memmap(path, dtype=np.uint16, mode="r")
    return Dataset(meta, splits["train"], splits["val"])


def for_variant(variant, data_dir: Path | None = None) -> Dataset:
    """The prepared dataset a store variant was trained on, refusing one prepared from another source."""
    facts = variant.card.dataset
    if facts is None:
        raise DataError(f"{variant.id}'s card names no dataset to evaluate on")
    dataset = load(facts.name, data_dir)
    if facts.sha256 and dataset.meta["sha256"] != facts.sha256:
        raise DataError(
            f"dataset {dataset.name!r} was prepared from a different source than {variant.id} was trained on "
            f"(sha256 {dataset.meta['sha256'][:12]}… vs {facts.sha256[:12]}…)"
        )
    return dataset
