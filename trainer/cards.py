"""What the trainer writes on a variant's card: the whole card at a new best checkpoint (built from one `RunFacts`
value), the progress facts at every evaluation, the stop facts at the end, and the final whole-split score."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import torch

from gptzoo.trainer.config import TrainConfig
from gptzoo.zoo import checkpoint
from gptzoo.zoo import datasets as dsmod
from gptzoo.zoo import store as storemod
from gptzoo.zoo.arch import card_fields
from gptzoo.zoo.card import Card, DatasetFacts, EvalFacts
from gptzoo.zoo.evaluate import estimate
from gptzoo.zoo.model import GPTConfig


@dataclass(frozen=True)
class Progress:
    """How far the run has come; written on the card at every evaluation and when it stops."""

    iterations: int
    tokens_seen: int
    training_seconds: float
    ms_per_iter: float | None

    def apply(self, card: Card) -> None:
        card.iterations = self.iterations
        card.tokens_seen = self.tokens_seen
        card.training_seconds = round(self.training_seconds, 3)
        card.ms_per_iter = self.ms_per_iter  # rounded once, by TrainState.ms_per_iter
        card.updated = datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunFacts:
    """Everything a new best checkpoint's card says: the run's shape and data, the losses and the checkpoint hash."""

    vid: str
    cfg: TrainConfig
    gconf: GPTConfig
    params: int
    dataset_meta: dict
    train_loss: float
    val_loss: float
    checkpoint_sha256: str
    progress: Progress

    def card(self) -> Card:
        g, cfg = self.gconf, self.cfg
        card = Card(
            id=self.vid, n_layer=g.n_layer, n_head=g.n_head, n_embd=g.n_embd, block_size=g.block_size,
            vocab_size=g.vocab_size, bias=g.bias, dropout=g.dropout, params=self.params,
            tokenizer=self.dataset_meta["tokenizer"], dataset=DatasetFacts(**dataset_facts(self.dataset_meta)),
            preset=cfg.preset, best_iter=self.progress.iterations, val_loss=self.val_loss,
            train_loss=self.train_loss, val_loss_windows=self.val_loss,
            eval=EvalFacts(windows_per_split=cfg.eval_iters * cfg.batch_size, batch_size=cfg.batch_size),
            checkpoint_sha256=self.checkpoint_sha256, torch_version=str(torch.__version__), train_config=cfg.to_dict(),
            **card_fields(g.to_dict()),
        )
        self.progress.apply(card)
        return card


def dataset_facts(meta: dict) -> dict:
    return {k: meta[k] for k in ("name", "kind", "sha256", "n_train", "n_val")}


def write_progress(store: storemod.Store, vid: str, progress: Progress) -> None:
    card = store.load(vid).card
    progress.apply(card)
    store.save_card(card)


def write_stop(store: storemod.Store, vid: str, it: int, reason: str) -> None:
    card = store.load(vid).card
    card.stopped_at_iter, card.stop_reason = it, reason
    store.save_card(card)


def score_best_on_whole_split(store: storemod.Store, vid: str, dataset: dsmod.Dataset, device: str = "cpu",
                              say=None) -> float:
    """Score the variant's best checkpoint on every window of the validation split, in full precision (no autocast,
    no TF32), and make that the card's val_loss; the fixed-window figure stays as `val_loss_windows`."""
    variant = store.load(vid)
    card = variant.card
    _, model = checkpoint.load_variant(variant)  # checks the checkpoint against the card
    ev = card.eval or EvalFacts()
    if say:
        say(f"scoring the best checkpoint (iter {card.best_iter}) on the whole validation split")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        val = estimate(model.to(device), {"val": dataset.val}, ev.batch_size, None, device=device)["val"]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    train_windows = ev.train_windows if ev.train_windows is not None else ev.windows_per_split
    card.val_loss = val
    card.eval = EvalFacts(windows_per_split=None, train_windows=train_windows, batch_size=ev.batch_size)
    store.save_card(card)
    return val
