"""The on-disk store of variants: one folder per variant, named by its id, holding checkpoints and `card.json`.

    <store>/shakespeare-char-4l/
        card.json        what the variant is and how good it is (see `Card` fields in the README)
        ckpt-best.pt     weights at the best validation loss (what eval/export use)
        ckpt-last.pt     weights, optimizer and data-order state at the last save (what --resume uses)
        train-log.jsonl  one line per evaluation during training
        model.onnx       the export (added by `gptzoo export`)

Nothing is read from outside the store: a variant folder that is a link to a place outside it, or whose card or ONNX
file is a link out of the folder, is a broken variant (the card's `onnx.file` is a plain file name, see card.py). A
card that cannot be read (permissions, I/O errors) is a broken variant too, never a missing one: a server would
otherwise take it as removed and unload it. Reasons name the variant, never a path on the server's disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock below is then a no-op
    fcntl = None

from gptzoo.zoo import atomic
from gptzoo.zoo import card as cardmod
from gptzoo.zoo.card import Card
from gptzoo.zoo.errors import GptzooError
from gptzoo.zoo.names import InvalidName, check_name, check_not_family

STORE_ENV = "GPTZOO_STORE"
HOME_ENV = "GPTZOO_HOME"
CARD = "card.json"
CKPT_BEST = "ckpt-best.pt"
CKPT_LAST = "ckpt-last.pt"
TRAIN_LOG = "train-log.jsonl"
ONNX = "model.onnx"


LOCKS = ".locks"  # <store>/.locks/<id>.lock: who is training a variant (outside its folder, so --overwrite keeps it)


class StoreError(GptzooError):
    """The store or a variant in it is missing, unreadable, inconsistent or not writable."""


def gptzoo_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".gptzoo").expanduser()


def default_store() -> Path:
    """$GPTZOO_STORE, else $GPTZOO_HOME/store, else ~/.gptzoo/store."""
    return Path(os.environ.get(STORE_ENV) or gptzoo_home() / "store").expanduser()


# Block families (gptzoo.zoo.arch, named here too so that serving need not import torch): gpt2's family ids are the
# dataset's alone, as before families existed; any other family's carry its name, so depths of two block families
# never share a family id and `auto` or a family id routes within one of them (docs/oss.md).
ARCH_NAMES = ("gpt2", "oss")


def family_id(dataset: str, arch: str = "gpt2") -> str:
    """The name of every depth of one block family trained on `dataset`, as variant ids spell it:
    shakespeare_char -> shakespeare-char (gpt2), shakespeare-char-oss (oss)."""
    base = dataset.replace("_", "-")
    return base if arch == "gpt2" else f"{base}-{arch}"


def card_family(card: Card | None) -> str | None:
    """The family id of a card's variant; None without a dataset."""
    return family_id(card.dataset_name, card.arch) if card and card.dataset_name else None


def variant_id(dataset: str, n_layer: int) -> str:
    """`shakespeare_char` at 4 layers -> `shakespeare-char-4l`."""
    return f"{family_id(dataset)}-{n_layer}l"


@dataclass
class Variant:
    dir: Path
    card: Card

    @property
    def id(self) -> str:
        return self.card.id

    @property
    def n_layer(self) -> int:
        return self.card.n_layer

    @property
    def dataset_name(self) -> str | None:
        return self.card.dataset_name

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def exported(self) -> bool:
        return (self.dir / ONNX).is_file()

    @property
    def onnx_path(self) -> Path:
        """The exported model's file: the one its card names, else the default name."""
        return self.path(self.card.onnx.file if self.card.onnx else ONNX)


@dataclass
class Broken:
    """A folder in the store whose card cannot be used, and why."""

    id: str
    dir: Path
    reason: str


def file_stamp(entry: Variant | Broken) -> tuple | None:
    """The ONNX file as the file system sees it (size, mtime, inode); None without one."""
    if isinstance(entry, Broken):
        return None
    try:
        st = entry.onnx_path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def revision(entry: Variant | Broken) -> tuple:
    """What a server would serve for this store entry: the sha256 the card gives its ONNX file (the exporter writes
    the file, then the card: a new file under the old card is an export in progress, not a new version), the file
    itself for a card without a sha256, or why there is nothing to serve."""
    if isinstance(entry, Broken):
        return ("broken", entry.reason)
    if not entry.onnx_path.is_file():
        return ("not_exported",)
    facts = entry.card.onnx
    return ("sha256", facts.sha256) if facts and facts.sha256 else ("file", file_stamp(entry))


class Store:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root else default_store()

    def ensure_writable(self, folder: Path | None = None) -> None:
        """Fail now, before long work, when the store (or one of its variant folders) cannot be written."""
        folder = folder or self.root
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            what = "store" if folder == self.root else "variant folder"
            raise StoreError(f"{what} {folder} is not writable: {e.strerror or e}") from e

    def variant_dir(self, vid: str, dataset: str | None = None) -> Path:
        """The folder of variant `vid`; InvalidName for an id that is not a plain identifier, is reserved (`auto`),
        or (given the variant's `dataset`) is its family's name."""
        check_name(vid, "variant id")
        if dataset:
            check_not_family(vid, {family_id(dataset, arch) for arch in ARCH_NAMES})
        return self.root / vid

    def load(self, vid: str) -> Variant:
        vdir = self.variant_dir(vid)
        if not (vdir / CARD).is_file():
            raise StoreError(f"no variant {vid!r} in {self.root}" + _available(self))
        try:
            return self._variant(vdir, self.root.resolve())
        except (InvalidName, StoreError) as e:
            raise StoreError(f"variant {vid}: {e}") from None

    def save_card(self, card: Card) -> Variant:
        """The one writer of card.json (atomic); returns the variant it describes."""
        vdir = self.variant_dir(card.id, card.dataset_name)
        atomic.write_bytes(vdir / CARD, cardmod.encode(card))
        return Variant(vdir, card)

    @contextlib.contextmanager
    def lock(self, vid: str, doing: str = "training") -> Iterator[None]:
        """Hold variant `vid` for one writer (a trainer, an import). An OS file lock: it dies with its process, so a
        killed run leaves nothing stale. A second holder gets StoreError naming the first."""
        path = self.root / LOCKS / f"{check_name(vid, 'variant id')}.lock"
        if fcntl is None:
            yield
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise StoreError(f"cannot lock {vid} in {self.root}: {e.strerror or e}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 300).decode(errors="replace").strip() or "another process"
                raise StoreError(f"variant {vid} is busy: {holder}; wait for it to end or stop it first") from None
            since = datetime.now(UTC).isoformat(timespec="seconds")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} is {doing} it (since {since})".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def scan(self) -> tuple[list[Variant], list[Broken]]:
        """Every folder with a card: the variants that load, and the broken ones with the reason, so one bad card
        never hides (or takes down) the rest of the zoo."""
        if not self.root.is_dir():
            return [], []
        good, broken = [], []
        real = self.root.resolve()
        for d in sorted(self.root.iterdir()):
            entry = self._entry(d, real)
            if isinstance(entry, Variant):
                good.append(entry)
            elif entry is not None:
                broken.append(entry)
        # a variant named like a family could never be reached by its name: the family's routing takes it
        families = {f for v in good if (f := card_family(v.card))}
        for v in list(good):
            try:
                check_not_family(v.id, families)
            except InvalidName as e:
                good.remove(v)
                broken.append(Broken(v.id, v.dir, str(e)))
        good.sort(key=lambda v: (v.dataset_name or "", v.n_layer, v.id))
        return good, broken

    def entry(self, vid: str) -> Variant | Broken | None:
        """What the store holds under `vid` now, as `scan` would report it: None when there is no such variant."""
        good, broken = self.scan()
        return next((e for e in [*good, *broken] if e.id == vid), None)

    def _entry(self, d: Path, real_root: Path) -> Variant | Broken | None:
        if d.name.startswith("."):
            return None  # unfinished folders, the lock folder, temp files
        try:
            (d / CARD).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None  # no card (yet): not a variant
        except OSError as e:
            return Broken(d.name, d, f"card.json cannot be read: {e.strerror or type(e).__name__}")
        try:
            return self._variant(d, real_root)
        except (InvalidName, StoreError) as e:
            return Broken(d.name, d, str(e))

    def _variant(self, d: Path, real_root: Path) -> Variant:
        """The variant in folder `d`, checked to lie in the store (`real_root`: its resolved root) and to read
        nothing outside its folder; InvalidName or StoreError saying what is wrong."""
        vid = check_name(d.name, "variant id")
        real = _real(d)
        if real is None or not real.is_relative_to(real_root):
            raise StoreError("its folder is a link to a place outside the store: move the variant into the store")
        if not _inside(d / CARD, real):
            raise StoreError("card.json is a link to a file outside the variant's folder")
        card = _read_card(d, vid)
        name = card.onnx.file if card.onnx else ONNX
        if (d / name).is_symlink() and not _inside(d / name, real):
            raise StoreError(f"{name} is a link to a file outside the variant's folder")
        if card.dataset_name:
            check_not_family(vid, {family_id(card.dataset_name, arch) for arch in ARCH_NAMES})
        return Variant(d, card)

    def variants(self) -> list[Variant]:
        return self.scan()[0]

    def resolve(self, model: str | None = None, layers: int | None = None, dataset: str | None = None) -> Variant:
        """The one variant named by id, or by depth (preferring `dataset`'s, then a unique match)."""
        if model:
            return self.load(model)
        if layers is None:
            raise StoreError("name a variant with --layers N or --model ID")
        if dataset and (self.root / variant_id(dataset, layers) / CARD).is_file():
            return self.load(variant_id(dataset, layers))
        matches = [v for v in self.variants() if v.n_layer == layers and not v.card.quantization]
        if dataset:
            matches = [v for v in matches if v.dataset_name == dataset] or matches
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"no {layers}-layer variant in {self.root}" + _available(self))
        ids = ", ".join(v.id for v in matches)
        raise StoreError(f"several {layers}-layer variants ({ids}); pick one with --model ID")


def _real(p: Path) -> Path | None:
    """Where `p` really is (links followed); None for a link loop."""
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a link loop (Python < 3.13)
        return None


def _inside(p: Path, folder: Path) -> bool:
    return (real := _real(p)) is not None and real.is_relative_to(folder)


def _read_card(vdir: Path, vid: str) -> Card:
    """The card in `vdir`, checked to describe `vid`; StoreError saying what is wrong with it."""
    try:
        raw = json.loads((vdir / CARD).read_bytes())  # json, not msgspec: older cards may hold a bare NaN
    except OSError as e:  # the reason is public (/readyz): no path
        raise StoreError(f"card.json cannot be read: {e.strerror or type(e).__name__}") from e
    except ValueError as e:
        raise StoreError(f"card.json is not readable JSON: {e}") from e
    try:
        card = cardmod.from_dict(raw)
    except msgspec.ValidationError as e:
        raise StoreError(f"card.json is invalid: {e}") from None
    if card.id != vid:
        raise StoreError(f"card.json describes {card.id[:80]!r}, not {vid!r}")
    return card


def _available(store: Store) -> str:
    ids = [v.id for v in store.variants()]
    return f" (available: {', '.join(ids)})" if ids else " (the store is empty: run `gptzoo train` first)"
