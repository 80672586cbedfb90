"""card.json: what a variant is and how good it is, as a typed msgspec Struct.

The store is the only writer (`Store.save_card`); every command reads typed fields. Decoding checks the types and the
facts that must agree (the tokenizer fits the model's vocabulary), so a broken card is refused with the field's name
instead of failing later in whatever command reads it. Unknown keys are ignored, so cards written by older gptzoo
versions (and hand-edited ones with extra notes) still load.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from msgspec import Meta

PositiveInt = Annotated[int, Meta(ge=1)]
GPT2_VOCAB = 50257  # GPT-2 BPE's tokens; nanoGPT pads the model's vocabulary to 50304
# onnx.file: a plain file name, so the file is always in the variant's folder (never an absolute path or `..`)
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")


class DatasetFacts(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str  # the prepared dataset (gptzoo data prepare) the variant was trained or is scored on
    kind: str | None = None  # shakespeare_char, shakespeare or text
    sha256: str | None = None  # of the source text: `eval` refuses a dataset prepared from another one
    n_train: int | None = None  # tokens in the training split
    n_val: int | None = None  # tokens in the validation split


class EvalFacts(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Which windows `val_loss` and `train_loss` were scored on, so `gptzoo eval` can score exactly the same ones."""

    windows_per_split: int | None = None  # fixed windows of the validation split (and of train, see below); None: all
    batch_size: PositiveInt = 12  # windows per forward pass
    train_windows: int | None = None  # fixed windows of the training split; None: the same as windows_per_split


class OnnxFacts(msgspec.Struct, kw_only=True, omit_defaults=True):
    file: str = "model.onnx"  # in the variant's folder
    sha256: str | None = None  # the server refuses a file that differs
    bytes: int | None = None
    opset: int | None = None
    exporter: str | None = None
    parity: dict | None = None  # the export's check against torch (see gptzoo.exports.parity)
    exported_at: str | None = None  # ISO 8601, UTC

    def __post_init__(self) -> None:
        # the value is not echoed: it may be a path on the server's disk, and reasons are public (/readyz)
        if not _FILE_NAME.fullmatch(self.file):
            raise ValueError("onnx.file must name a file in the variant's own folder (a plain file name, no folders "
                             "or absolute path)")


class InteropFacts(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A GGUF file or a Hugging Face folder `gptzoo export --format gguf|hf` wrote (gptzoo.exports.interop)."""

    file: str  # in the variant's folder: model.gguf, model-q8_0.gguf or hf (a folder)
    sha256: str | None = None  # of the file; for a folder, of its files' names and checksums (`files`)
    files: dict[str, str] | None = None  # a folder's files and their sha256
    bytes: int | None = None
    quantization: str | None = None  # gguf: F32 or Q8_0
    val_loss: float | None = None  # a quantized file's own, on the card's validation windows
    checks: dict | None = None  # the export-time checks (read-back, transformers or llama.cpp agreement)
    exported_at: str | None = None

    def __post_init__(self) -> None:
        if not _FILE_NAME.fullmatch(self.file):
            raise ValueError("an export's file must be a plain name in the variant's own folder")


class SourceFacts(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: str  # where an imported variant came from: nanogpt or hf
    path: str | None = None
    sha256: str | None = None


class Card(msgspec.Struct, kw_only=True, omit_defaults=True):
    # identity and shape (what the model is)
    id: str  # the variant id, also its folder name
    n_layer: PositiveInt  # depth
    n_head: PositiveInt
    n_embd: PositiveInt  # width
    block_size: PositiveInt  # context length in tokens
    vocab_size: PositiveInt
    tokenizer: dict  # the tokenizer spec (gptzoo.zoo.tokenizers.from_spec): char vocabulary or gpt2
    bias: bool = False
    dropout: float = 0.0
    params: int | None = None
    arch: str = "gpt2"  # block family (gptzoo.zoo.arch): gpt2 (nanoGPT's) or oss (docs/oss.md)
    arch_args: dict | None = None  # the family's own settings (oss: kv_heads, window, rope_theta, experts, ...)
    # quality (how good it is)
    dataset: DatasetFacts | None = None
    # val_loss: the best checkpoint on `eval`'s windows of the validation split. Training and import score it on the
    # whole split (eval.windows_per_split None), so every variant's figure compares with every other's; a card whose
    # training was killed before its end keeps the periodic evaluation's fixed-window figure (and says so in `eval`).
    val_loss: float | None = None
    train_loss: float | None = None  # the best checkpoint on the training split's fixed windows
    eval: EvalFacts | None = None
    val_loss_windows: float | None = None  # the best checkpoint on the periodic evaluation's fixed windows (the log's)
    reported_val_loss: float | None = None  # an imported variant's own figure, as its source measured it
    # training (how it got there)
    preset: str | None = None  # cpu or gpu width profile
    best_iter: int | None = None  # iteration of the best checkpoint
    iterations: int | None = None  # iterations run so far
    stopped_at_iter: int | None = None  # where the last training run stopped (None: never ended cleanly)
    stop_reason: str | None = None  # why: max_iters, patience (early stopping), interrupted (Ctrl-C), diverged
    tokens_seen: int | None = None
    training_seconds: float | None = None
    ms_per_iter: float | None = None  # median step time
    train_config: dict | None = None  # the full TrainConfig, for --resume and reports
    checkpoint_sha256: str | None = None  # of ckpt-best.pt: eval/export refuse a replaced checkpoint
    torch_version: str | None = None
    updated: str | None = None  # ISO 8601, UTC, of the last write by training or import
    source: SourceFacts | None = None  # set for imported variants
    # export and quantization
    onnx: OnnxFacts | None = None  # set by `gptzoo export`
    gguf: list[InteropFacts] | None = None  # set by `gptzoo export --format gguf` (F32, and Q8_0 with --quantize)
    hf: InteropFacts | None = None  # set by `gptzoo export --format hf`
    quantization: str | None = None  # e.g. int8-dynamic for a `<id>-int8` variant
    source_variant: str | None = None  # the fp32 variant a quantized one came from
    val_loss_fp32: float | None = None  # that variant's val_loss, for comparison

    def __post_init__(self) -> None:
        kind = self.tokenizer.get("kind")
        if kind == "char":
            chars = self.tokenizer.get("chars")
            if not isinstance(chars, str) or len(set(chars)) != len(chars):
                raise ValueError("the char tokenizer's `chars` must be a string of distinct characters")
            if len(chars) != self.vocab_size:
                raise ValueError(f"the tokenizer has {len(chars)} characters but the model's vocabulary is "
                                 f"{self.vocab_size}")
        elif kind == "gpt2":
            if self.vocab_size < GPT2_VOCAB:
                raise ValueError(f"GPT-2 BPE needs a vocabulary of at least {GPT2_VOCAB}, the model has "
                                 f"{self.vocab_size}")
        else:
            raise ValueError(f"unknown tokenizer kind {str(kind)[:40]!r} (known: char, gpt2)")

    @property
    def dataset_name(self) -> str | None:
        return self.dataset.name if self.dataset else None

    @property
    def arch_summary(self) -> str:
        """The block family and its settings in short, as `zoo list` and the report show them."""
        return arch_summary(self.arch, self.arch_args)

    def to_dict(self) -> dict:
        return msgspec.to_builtins(self)


# arch_args keys shown in short, in this order, and how: the rest (balance_coef, a training weight) is on the card
_SHORT = (("kv_heads", "kv{}"), ("window", "w{}"), ("experts", "moe{}"), ("experts_per_token", "k{}"),
          ("rope_theta", "rope{:g}"))
_DEFAULT_SHORT = {"rope_theta": 10000.0}  # left out at its default: every oss variant would say it


def arch_summary(arch: str, arch_args: dict | None) -> str:
    """`gpt2`; `oss kv2 w64`; `oss kv2 w64 moe4 k1`; `oss kv1 w8 rope150000`. Experts-per-token only with experts."""
    args = arch_args or {}
    parts = [arch]
    for key, fmt in _SHORT:
        value = args.get(key)
        if value is None or _DEFAULT_SHORT.get(key) == value or (key == "experts" and not value):
            continue  # absent, the default, or dense
        if key == "experts_per_token" and not args.get("experts"):
            continue
        parts.append(fmt.format(value))
    return " ".join(parts)


def from_dict(data: object) -> Card:
    """A card from parsed card.json (json.loads, which also reads the bare NaN older cards hold); raises
    msgspec.ValidationError naming what is wrong."""
    return msgspec.convert(data, Card)


def encode(card: Card) -> bytes:
    """Indented JSON, as people read and diff cards."""
    return msgspec.json.format(msgspec.json.encode(card), indent=2) + b"\n"
