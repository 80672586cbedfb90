"""Tokenizers: `char` (a vocabulary built from the corpus, stored with the model) and `gpt2` (tiktoken's BPE).

A tokenizer is rebuilt from its *spec*, a small JSON-able dict kept in the dataset metadata and in every card, so
a variant carries what it needs to turn text into ids and back.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

from gptzoo.zoo import sources
from gptzoo.zoo.errors import BadValue


class UnknownCharacters(BadValue):
    """The text holds characters a char-level vocabulary does not have."""

    def __init__(self, chars: list[str]):
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars[:20]) + (" …" if len(chars) > 20 else "")
        super().__init__(f"characters outside the model's vocabulary: {shown}")


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def decode_bytes(self, ids: list[int]) -> bytes: ...

    def spec(self) -> dict: ...


class CharTokenizer:
    """One id per character, ids in sorted character order (as nanoGPT's prepare.py)."""

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars):
            raise BadValue("char vocabulary has repeated characters")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def unknown(self, text: str) -> list[str]:
        return sorted(set(text) - self.stoi.keys())

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            raise UnknownCharacters(self.unknown(text)) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.decode(ids).encode()

    def spec(self) -> dict:
        return {"kind": "char", "chars": self.chars}


class GPT2Tokenizer:
    """GPT-2's byte-level BPE (tiktoken's r50k_base, the same ranks as `gpt2`)."""

    def __init__(self):
        self.enc = _gpt2_encoding()
        self.vocab_size = self.enc.n_vocab  # 50257
        self.eot = self.enc.eot_token

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        # nanoGPT pads the vocabulary to 50304; ids past 50256 carry no text.
        return self.enc.decode_bytes([i for i in ids if i < self.vocab_size])

    def spec(self) -> dict:
        return {"kind": "gpt2", "encoding": "r50k_base"}


@lru_cache(maxsize=1)
def _gpt2_encoding():
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

    local = sources.local_copy(sources.GPT2_RANKS)
    if local is None:
        try:  # tiktoken's own cache, else its download
            return tiktoken.get_encoding("r50k_base")
        except Exception as e:  # network errors surface as many types
            raise sources.SourceError(
                f"cannot load the GPT-2 BPE ranks ({e}); offline, set {sources.SOURCE_ENV} to a folder holding "
                f"{sources.GPT2_RANKS.filename}"
            ) from e
    ranks = load_tiktoken_bpe(str(local), expected_hash=sources.GPT2_RANKS.sha256)
    return tiktoken.Encoding(
        name="r50k_base", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: 50256}
    )


def from_spec(spec: dict) -> Tokenizer:
    kind = spec.get("kind")
    if kind == "char":
        return CharTokenizer(spec["chars"])
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise BadValue(f"unknown tokenizer kind {kind!r} (known: char, gpt2)")
