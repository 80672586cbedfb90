"""Request and response bodies (OpenAI's completions and models API, plus gptzoo's extensions), as msgspec Structs.

Optional request fields also accept null, as OpenAI's API does; the defaults are applied in serving.py."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

StopSeq = Annotated[str, Meta(min_length=1, max_length=64)]
Prompt = Annotated[str, Meta(min_length=1)]

# OpenAI fields gptzoo does not implement, with the values that ask for nothing: clients that always send them (at
# those values) still work, any other value is refused by name.
NEUTRAL: dict[str, tuple] = {"logprobs": (None,), "echo": (None, False), "best_of": (None, 1), "suffix": (None, ""),
                             "presence_penalty": (None, 0), "frequency_penalty": (None, 0), "logit_bias": (None, {})}


def neutral_values(field: str) -> str:
    return " or ".join(msgspec.json.encode(v).decode() for v in NEUTRAL[field])


def _unsupported(field: str) -> Meta:
    return Meta(description=f"Not supported by gptzoo: accepted only as {neutral_values(field)}.")


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    include_usage: bool | None = None


class CompletionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: Annotated[str, Meta(min_length=1, max_length=256, examples=["4l", "shakespeare-char-4l", "auto"],
                               description="Variant id or depth alias; or `auto`, or a family id (the dataset's "
                               "name, e.g. shakespeare-char): the server picks the depth by the budget below.")]
    prompt: Annotated[Prompt | Annotated[list[Prompt | int], Meta(min_length=1)],
                      Meta(examples=["ROMEO:"], description="Text to continue: a string, or a list holding one string "
                           "(as some OpenAI clients send it). Several prompts and token ids are refused.")]
    max_tokens: Annotated[int, Meta(ge=1, description="Tokens to generate at most (default 16).")] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2, description="0 is greedy (default 1).")] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1, description="Nucleus sampling mass (default 1).")] | None = None
    top_k: Annotated[int, Meta(ge=1, description="gptzoo extension: sample among the k likeliest.")] | None = None
    seed: Annotated[int, Meta(ge=0, description="Same seed, prompt and model give the same text.")] | None = None
    stop: StopSeq | Annotated[list[StopSeq], Meta(max_length=4)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(description="Choices per prompt; only 1 is supported.")] | None = None
    user: Annotated[str, Meta(max_length=256)] | None = None
    # gptzoo extensions for depth routing (OpenAI clients send them through `extra_body`)
    max_tpot_ms: Annotated[float, Meta(gt=0, description="Latency budget: mean milliseconds per output token. With "
                                       "`auto` or a family, the best variant predicted to stay within it serves "
                                       "(the fastest when none is).")] | None = None
    max_ttft_ms: Annotated[float, Meta(gt=0, description="Latency budget: milliseconds to the first token.")] | None \
        = None
    fallback: Annotated[Literal["none", "shallower"], Meta(description="When the variant's queue is full: 429 "
                        "(none), or the next shallower variant of its family (shallower). Default: the server's "
                        "--fallback.")] | None = None
    # gptzoo extension for speculative decoding (`gptzoo serve --draft`)
    speculative: Annotated[bool, Meta(description="false: this request is decoded without the variant's draft "
                           "model (on a variant the server drafts for). Drafting never changes the text at "
                           "temperature 0, nor its distribution above it. Default true.")] | None = None
    # not supported (NEUTRAL): accepted at their neutral values only, checked in serving.py
    logprobs: Annotated[int, _unsupported("logprobs")] | None = None
    echo: Annotated[bool, _unsupported("echo")] | None = None
    best_of: Annotated[int, _unsupported("best_of")] | None = None
    suffix: Annotated[str, _unsupported("suffix")] | None = None
    presence_penalty: Annotated[float, _unsupported("presence_penalty")] | None = None
    frequency_penalty: Annotated[float, _unsupported("frequency_penalty")] | None = None
    logit_bias: Annotated[dict[str, float], _unsupported("logit_bias")] | None = None


class CompletionChoice(msgspec.Struct, kw_only=True):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One Server-Sent Event of a streamed completion (usage only in the last one, with stream_options)."""

    id: str
    object: Literal["text_completion"]  # no default: omit_defaults would drop it
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(msgspec.Struct, kw_only=True):
    """A variant; or a name that routes (kind family or auto: `variants` lists what it picks from, best first)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gptzoo"
    aliases: list[str]
    n_layer: int | None  # None: the card is broken (see `reason`)
    n_head: int | None
    n_embd: int | None
    block_size: int | None
    vocab_size: int | None
    params: int | None
    val_loss: float | None
    dataset: str | None
    quantization: str | None
    provider: str | None
    ready: bool
    state: Literal["loading", "ready", "failed", "not_exported", "unloaded"]
    reason: str | None
    kind: Literal["variant", "family", "auto"] = "variant"
    variants: list[str] | None = None
    arch: Annotated[str | None, Meta(description="The block family: gpt2 (nanoGPT's block) or oss (GPT-OSS-style: "
                                                 "RoPE, grouped-query attention, sliding window, sinks); a family's "
                                                 "and auto's are their variants'. Null: the card is broken.")] = None
    arch_args: Annotated[dict | None, Meta(description="The block family's own settings (oss: kv_heads, window, "
                                                       "rope_theta, experts, experts_per_token); null: gpt2.")] = None
    family: Annotated[str | None, Meta(description="The family id a variant routes in (each block family of a "
                                                   "dataset is one: shakespeare-char, shakespeare-char-oss).")] = None
    draft: Annotated[str | None, Meta(description="The variant that drafts tokens for this one (speculative "
                                                  "decoding, `gptzoo serve --draft`); null: none.")] = None


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelState(msgspec.Struct, kw_only=True):
    id: str
    state: str
    ready: bool
    provider: str | None
    reason: str | None


class Readiness(msgspec.Struct, kw_only=True, omit_defaults=True):
    status: Literal["ready", "not_ready"]
    models: list[ModelState]
    reason: str | None = None  # why not ready (absent when ready)


class Health(msgspec.Struct):
    status: Literal["ok"] = "ok"
