"""Import a checkpoint written by nanoGPT's train.py into the store, as a variant that exports and serves like any.

nanoGPT saves {model, optimizer, model_args, iter_num, best_val_loss, config}; weights may carry torch.compile's
`_orig_mod.` prefix. A char-level dataset keeps its vocabulary in meta.pkl ({vocab_size, itos, stoi}); without one the
model is taken to use GPT-2's BPE (nanoGPT pads that vocabulary to 50304; the extra ids are never produced by text).

The import scores the checkpoint the zoo's way: on every window of the validation split of the dataset it was trained
on (nanoGPT's `config["dataset"]`, or the one named), prepared first when it is a built-in one. That is the card's
`val_loss`; nanoGPT's own `best_val_loss` (an estimate from random batches) is kept as `reported_val_loss`.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import torch

from gptzoo.zoo import checkpoint
from gptzoo.zoo import datasets as dsmod
from gptzoo.zoo.card import GPT2_VOCAB, Card, DatasetFacts, EvalFacts, SourceFacts
from gptzoo.zoo.evaluate import estimate
from gptzoo.zoo.names import check_name, to_name
from gptzoo.zoo.prepare import ensure
from gptzoo.zoo.sources import sha256_file
from gptzoo.zoo.store import CARD, CKPT_BEST, Store, Variant, variant_id


class _DataOnly(pickle.Unpickler):
    """meta.pkl holds only dicts, strings and ints: refuse anything that would import code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"meta.pkl refers to {module}.{name}; only plain data is accepted")


def read_meta(path: Path) -> dict:
    try:
        meta = _DataOnly(io.BytesIO(Path(path).read_bytes())).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise checkpoint.CheckpointError(f"cannot read {path}: {e}") from e
    if not isinstance(meta, dict) or "itos" not in meta:
        raise checkpoint.CheckpointError(f"{path} is not a nanoGPT meta.pkl (no itos)")
    return meta


def char_vocabulary(meta: dict, path: Path) -> str:
    """meta.pkl's itos as one string, id order; refused unless every id 0..n-1 maps to its own single character
    (a repeated character could never be encoded back to both its ids)."""
    itos = meta["itos"]
    try:
        chars = [itos[i] for i in range(len(itos))]
    except (KeyError, TypeError, IndexError) as e:
        raise checkpoint.CheckpointError(f"{path}: itos does not map ids 0..{len(itos) - 1} to characters") from e
    if not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise checkpoint.CheckpointError(f"{path}: itos must map every id to one character")
    repeated = sorted(c for c, n in Counter(chars).items() if n > 1)
    if repeated:
        shown = ", ".join(repr(c) for c in repeated[:10])
        raise checkpoint.CheckpointError(f"{path}: itos repeats character(s) {shown}; a char vocabulary needs each "
                                         f"character once")
    return "".join(chars)


def import_checkpoint(store: Store, ckpt_path: Path, meta_path: Path | None = None, name: str | None = None,
                      overwrite: bool = False, data_dir: Path | None = None, dataset: str | None = None,
                      score: bool = True, say=None) -> Variant:
    """Import nanoGPT's `ckpt_path` as a store variant. With `score` (the default) its val_loss is measured on every
    window of `dataset`'s validation split (default: the dataset nanoGPT trained on), prepared first if it is a built-in
    one; without, the card has no val_loss, only the source's `reported_val_loss`."""
    if name is not None:
        check_name(name, "variant id")  # before reading anything
    if dataset is not None:
        check_name(dataset, "dataset name")
    ckpt = checkpoint.load(ckpt_path)
    model = checkpoint.build_model(ckpt)  # also checks the weights fit model_args
    cfg = model.config
    if meta_path:
        chars = char_vocabulary(read_meta(meta_path), meta_path)
        if len(chars) != cfg.vocab_size:
            raise checkpoint.CheckpointError(
                f"meta.pkl has {len(chars)} characters but the model's vocabulary is {cfg.vocab_size}")
        tokenizer = {"kind": "char", "chars": chars}
    else:
        if cfg.vocab_size < GPT2_VOCAB:
            raise checkpoint.CheckpointError(
                f"vocabulary of {cfg.vocab_size} is too small for GPT-2 BPE: give the dataset's meta.pkl with --meta")
        tokenizer = {"kind": "gpt2", "encoding": "r50k_base"}
    config = ckpt.get("config") or {}
    dataset = dataset or to_name(str(config.get("dataset", "nanogpt")), "nanogpt")
    vid = name or "nanogpt-" + variant_id(dataset, cfg.n_layer)
    return write_import(store, vid, ckpt, ckpt_path, model, tokenizer, dataset, config, overwrite=overwrite,
                        score=score, data_dir=data_dir, say=say)


def write_import(store, vid, ckpt, source_path, model, tokenizer, dataset, config, *, overwrite: bool, score: bool,
                 data_dir: Path | None, say, source: str = "nanogpt") -> Variant:
    """An imported model into the store as variant `vid`, under its lock: refused over an existing variant (unless
    `overwrite`) or a folder that is not one, scored on `dataset` unless `score` is off."""
    vdir = store.variant_dir(vid, dataset)
    store.ensure_writable()
    with store.lock(vid, "importing"):
        if (vdir / CARD).exists() and not overwrite:
            raise checkpoint.CheckpointError(f"variant {vid} already exists; pass --name or --overwrite")
        if vdir.exists() and any(vdir.iterdir()) and not (vdir / CARD).exists():
            raise checkpoint.CheckpointError(f"{vdir} is not a gptzoo variant (no {CARD}); refusing to write into it")
        prepared = _scoring_dataset(dataset, tokenizer, data_dir, say) if score else None
        return _write_variant(store, vid, ckpt, source_path, model, tokenizer, dataset, config, prepared, say,
                              source=source)


def _scoring_dataset(name: str, tokenizer: dict, data_dir: Path | None, say) -> dsmod.Dataset:
    """The prepared dataset to score the import on (preparing a built-in one), refused unless its tokenizer is the
    checkpoint's: token ids must mean the same characters."""
    try:
        prepared = ensure(name, data_dir, say)
    except dsmod.DataError as e:
        raise dsmod.DataError(f"{e}; to score the import on another prepared dataset pass --dataset NAME, or import it "
                              f"unscored with --no-eval") from e
    theirs = prepared.meta["tokenizer"]
    same = (theirs == tokenizer) if tokenizer["kind"] == "char" else theirs.get("kind") == "gpt2"
    if not same:
        raise checkpoint.CheckpointError(
            f"dataset {name!r} is tokenized differently from the checkpoint ({_describe(theirs)} vs "
            f"{_describe(tokenizer)}), so it cannot score it; pass --dataset NAME or --no-eval")
    return prepared


def _describe(tokenizer: dict) -> str:
    if tokenizer.get("kind") == "char":
        return f"{len(tokenizer.get('chars', ''))} characters"
    return str(tokenizer.get("kind"))


def _write_variant(store, vid, ckpt, ckpt_path, model, tokenizer, dataset, config, prepared, say,
                   source: str = "nanogpt") -> Variant:
    cfg, vdir = model.config, store.variant_dir(vid)
    best = float(ckpt.get("best_val_loss", float("nan")))
    reported = best if math.isfinite(best) else None
    saved = {
        "model": model.state_dict(),
        "model_args": cfg.to_dict(),
        "iter_num": int(ckpt.get("iter_num", 0)),
        "best_val_loss": best,
        "config": {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))},
        "tokenizer": tokenizer,
    }
    eval_iters, batch = int(config.get("eval_iters", 200)), int(config.get("batch_size", 12))
    val = None
    facts = DatasetFacts(name=dataset)
    if prepared is not None:  # scored before anything is written: an interrupted import leaves nothing behind
        if say:
            say(f"scoring the checkpoint on the whole validation split of {dataset!r}")
        val = estimate(model, {"val": prepared.val}, batch, None)["val"]
        m = prepared.meta
        facts = DatasetFacts(name=m["name"], kind=m["kind"], sha256=m["sha256"], n_train=m["n_train"],
                             n_val=m["n_val"])
    vdir.mkdir(parents=True, exist_ok=True)
    checkpoint.save(saved, vdir / CKPT_BEST)
    card = Card(
        id=vid, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
        vocab_size=cfg.vocab_size, bias=cfg.bias, dropout=cfg.dropout, params=model.num_params(), tokenizer=tokenizer,
        dataset=facts,
        source=SourceFacts(kind=source, path=str(Path(ckpt_path).resolve()), sha256=sha256_file(ckpt_path)),
        iterations=saved["iter_num"], best_iter=saved["iter_num"],
        val_loss=val,  # the zoo's figure: every window of the validation split (None when not scored)
        reported_val_loss=reported,  # nanoGPT's own estimate (random batches), as it reported it
        eval=EvalFacts(windows_per_split=None, train_windows=eval_iters * batch, batch_size=batch),
        checkpoint_sha256=sha256_file(vdir / CKPT_BEST), torch_version=str(torch.__version__),
        updated=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return store.save_card(card)
