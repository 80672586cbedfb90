"""The on-disk store of variants: one folder per variant, named by its id, holding checkpoints and `card.json`.

    <store>/shakespeare-char-4l/
        card.json        what the variant is and how good it is (see `Card` fields in the README)
        ckpt-best.pt     weights at the best validation loss (what eval/export use)
        ckpt-last.pt     weights, optimizer and data-order state at the last save (what --resume uses)
        train-log.jsonl  one line per evaluation during training
        model.onnx       the export (added by `gptzoo export`)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from gptzoo.zoo import atomic

STORE_ENV = "GPTZOO_STORE"
HOME_ENV = "GPTZOO_HOME"
CARD = "card.json"
CKPT_BEST = "ckpt-best.pt"
CKPT_LAST = "ckpt-last.pt"
TRAIN_LOG = "train-log.jsonl"
ONNX = "model.onnx"


class StoreError(Exception):
    """The store or a variant in it is missing, unreadable, inconsistent or not writable."""


def gptzoo_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".gptzoo").expanduser()


def default_store() -> Path:
    """$GPTZOO_STORE, else $GPTZOO_HOME/store, else ~/.gptzoo/store."""
    return Path(os.environ.get(STORE_ENV) or gptzoo_home() / "store").expanduser()


def variant_id(dataset: str, n_layer: int) -> str:
    """`shakespeare_char` at 4 layers -> `shakespeare-char-4l`."""
    return f"{dataset.replace('_', '-')}-{n_layer}l"


@dataclass
class Variant:
    dir: Path
    card: dict

    @property
    def id(self) -> str:
        return self.card["id"]

    @property
    def n_layer(self) -> int:
        return int(self.card["n_layer"])

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def exported(self) -> bool:
        return (self.dir / ONNX).is_file()

    def save_card(self) -> None:
        atomic.write_json(self.dir / CARD, self.card)


class Store:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root else default_store()

    def ensure_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StoreError(f"store {self.root} is not writable: {e.strerror or e}") from e

    def variant_dir(self, vid: str) -> Path:
        return self.root / vid

    def load(self, vid: str) -> Variant:
        card_path = self.root / vid / CARD
        if not card_path.is_file():
            raise StoreError(f"no variant {vid!r} in {self.root}" + _available(self))
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{card_path} is not a readable card: {e}") from e
        if not isinstance(card, dict) or card.get("id") != vid:
            raise StoreError(f"{card_path} does not describe variant {vid!r}")
        return Variant(self.root / vid, card)

    def variants(self) -> list[Variant]:
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            if (d / CARD).is_file():
                try:
                    out.append(self.load(d.name))
                except StoreError:
                    continue  # a broken folder must not hide the rest of the zoo
        return sorted(out, key=lambda v: (v.card.get("dataset", {}).get("name", ""), v.n_layer, v.id))

    def resolve(self, model: str | None = None, layers: int | None = None, dataset: str | None = None) -> Variant:
        """The one variant named by id, or by depth (preferring `dataset`'s, then a unique match)."""
        if model:
            return self.load(model)
        if layers is None:
            raise StoreError("name a variant with --layers N or --model ID")
        if dataset and (self.root / variant_id(dataset, layers) / CARD).is_file():
            return self.load(variant_id(dataset, layers))
        matches = [v for v in self.variants() if v.n_layer == layers and not v.card.get("quantization")]
        if dataset:
            matches = [v for v in matches if v.card.get("dataset", {}).get("name") == dataset] or matches
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"no {layers}-layer variant in {self.root}" + _available(self))
        ids = ", ".join(v.id for v in matches)
        raise StoreError(f"several {layers}-layer variants ({ids}); pick one with --model ID")


def _available(store: Store) -> str:
    ids = [v.id for v in store.variants()]
    return f" (available: {', '.join(ids)})" if ids else " (the store is empty: run `gptzoo train` first)"
