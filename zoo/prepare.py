"""Dataset preparation: text (tiny-Shakespeare or a user's file) -> token ids, split 90/10, written atomically
(the format gptzoo.zoo.datasets reads). In zoo/ because training and the import of a nanoGPT checkpoint
(gptzoo.zoo.nanogpt) both prepare datasets; gptzoo.trainer.data re-exports it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gptzoo.zoo import atomic, sources
from gptzoo.zoo import datasets as dsmod
from gptzoo.zoo.datasets import DataError, default_data_dir
from gptzoo.zoo.names import check_name, to_name
from gptzoo.zoo.tokenizers import CharTokenizer, GPT2Tokenizer, Tokenizer

DEFAULT_DATASET = "shakespeare_char"
# Built-in datasets: their default source and tokenizer. `text` takes any user file.
BUILTIN = {
    "shakespeare_char": ("char", sources.TINY_SHAKESPEARE),
    "shakespeare": ("gpt2", sources.TINY_SHAKESPEARE),
}
KINDS = (*BUILTIN, "text")
TRAIN_FRACTION = 0.9


def make_tokenizer(kind: str, text: str) -> Tokenizer:
    if kind == "char":
        tok = CharTokenizer.from_text(text)
        if tok.vocab_size > 65536:
            raise DataError(f"{tok.vocab_size} distinct characters do not fit uint16 token ids; use --tokenizer gpt2")
        return tok
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise DataError(f"unknown tokenizer {kind!r} (known: char, gpt2)")


def prepare(
    kind: str,
    data_dir: Path | None = None,
    source: str | None = None,
    name: str | None = None,
    tokenizer: str | None = None,
    sha256: str | None = None,
) -> Path:
    """Prepare dataset `kind` (shakespeare_char, shakespeare or text) and return its folder."""
    if kind not in KINDS:
        raise DataError(f"unknown dataset {kind[:80]!r}; choose one of: {', '.join(KINDS)}")
    if name is not None:
        check_name(name, "dataset name")  # before any download or write
    if kind == "text":
        if not source:
            raise DataError("the `text` dataset needs --source PATH_OR_URL")
        name = name or to_name(Path(source.rstrip("/")).stem, "text")
        tok_kind, expected = tokenizer or "char", sha256
        data = sources.read_source(source, expected)
    else:
        name = name or kind
        tok_kind, remote = BUILTIN[kind]
        if tokenizer and tokenizer != tok_kind:
            raise DataError(f"{kind} uses the {tok_kind} tokenizer; use the `text` dataset for another")
        expected = sha256 or remote.sha256
        data = sources.read_source(source, expected) if source else sources.fetch(remote)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"source is not UTF-8 text: {e}") from e
    if len(text) < 100:
        raise DataError(f"source holds only {len(text)} characters; need at least 100 to split into train/val")

    tok = make_tokenizer(tok_kind, text)
    cut = int(len(text) * TRAIN_FRACTION)
    train_ids = np.array(tok.encode(text[:cut]), dtype=np.uint16)
    val_ids = np.array(tok.encode(text[cut:]), dtype=np.uint16)

    out = (data_dir or default_data_dir()) / name
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "meta.json").unlink(missing_ok=True)  # the folder is unfinished until meta.json is back
        atomic.write_bytes(out / "train.bin", train_ids.tobytes())
        atomic.write_bytes(out / "val.bin", val_ids.tobytes())
        meta = {
            "name": name,
            "kind": kind,
            "source": source or "default",
            "sha256": sources.sha256_bytes(data),
            "tokenizer": tok.spec(),
            "vocab_size": tok.vocab_size,
            "dtype": "uint16",
            "n_train": int(train_ids.size),
            "n_val": int(val_ids.size),
            "train_sha256": sources.sha256_bytes(train_ids.tobytes()),
            "val_sha256": sources.sha256_bytes(val_ids.tobytes()),
        }
        atomic.write_json(out / "meta.json", meta)
    except OSError as e:
        raise DataError(f"cannot write dataset to {out}: {e.strerror or e}") from e
    return out


def ensure(name: str, data_dir: Path | None = None, say=None) -> dsmod.Dataset:
    """The prepared dataset `name`; a built-in one (shakespeare_char, shakespeare) that is not prepared yet is
    prepared first, saying so through `say`. What `train`, `eval` and `import` all do."""
    try:
        return dsmod.load(name, data_dir)
    except DataError:
        if name not in BUILTIN or ((data_dir or default_data_dir()) / name / "meta.json").exists():
            raise
    if say:
        say(f"dataset {name!r} is not prepared yet: preparing it now (once)")
    prepare(name, data_dir)
    return dsmod.load(name, data_dir)
