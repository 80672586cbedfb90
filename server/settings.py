"""Server settings: one Struct, filled from CLI flags or, for uvicorn's worker processes, from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from gptzoo.zoo.errors import BadValue

Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
# A key has a non-blank character: an empty one (`--api-key "$UNSET"`) must not mean "no key"
Key = Annotated[str, msgspec.Meta(min_length=1, pattern=r"\S")]
KEY_FIELDS = ("api_key", "admin_key")

# Fields read from variables the rest of gptzoo already uses; every other field is GPTZOO_SERVE_<FIELD>.
_ENV_NAMES = {"store": "GPTZOO_STORE", "api_key": "GPTZOO_API_KEY", "admin_key": "GPTZOO_ADMIN_KEY",
              "threads": "GPTZOO_THREADS"}
_LIST_FIELDS = {"models", "drafts", "allowed_hosts"}  # comma-separated in the environment


def env_name(field: str) -> str:
    return _ENV_NAMES.get(field, f"GPTZOO_SERVE_{field.upper()}")


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    store: str | None = None  # store folder; None means gptzoo's default store
    device: Literal["auto", "cpu", "cuda"] = "auto"  # onnxruntime provider choice (auto: CUDA when available)
    api_key: Key | None = None  # when set, /v1/* and the OpenAPI pages need `Authorization: Bearer <key>`
    admin_key: Key | None = None  # the key of /admin/* (None: the api_key, or open when that is None too)
    # Host names this server answers to besides localhost and IP addresses (which DNS rebinding cannot use); "*":
    # any. See gptzoo.server.security.
    allowed_hosts: list[Annotated[str, msgspec.Meta(pattern=r"^[^,\s]+$")]] | None = None  # no commas: see to_env
    max_tokens: Positive = 1024  # cap on a request's max_tokens
    max_prompt_tokens: Positive = 4096  # longer prompts are refused (the model reads only its last block_size)
    max_body_bytes: Positive = 1_000_000  # larger request bodies get 413
    max_batch_size: Positive = 32  # requests decoded together per model (continuous batching; 32 measured best)
    # Prompt tokens fed per decode step at most (chunked prefill): a long prompt joins over several steps instead of
    # stalling every running stream for its whole prefill; window re-prefills are not counted (they are a row's decode).
    prefill_chunk: Positive = 256
    # Seconds a stream's text may wait to go out with the next tokens (one SSE chunk instead of one per token; a first
    # token and a stream's end go out at once). Waking the event loop per token costs more than a small model's
    # decode step on a busy core; 0 sends every token as it comes.
    stream_interval: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.005
    max_waiting: Positive = 256  # requests queued per model beyond the batch before 429 (`--max-queue`)
    # Seconds a request may wait for a batch slot; then 503 queue_timeout with Retry-After. Admitted requests are not
    # timed: max_tokens bounds them and a client that leaves cancels its row, so admitted work is never thrown away
    # (a deadline on the whole request would, under overload, admit requests late and cut them off half done).
    request_timeout: Seconds = 60.0
    # Seconds a request's whole body may take to arrive once its headers are in; then 408 and the connection closes.
    # uvicorn has no such timeout, so without it a client trickling its body holds a connection forever.
    body_timeout: Seconds = 30.0
    # Seconds a connection may take to send a request's head (its request line and headers), counted from when it
    # opens or its last answer went out; then it is closed. uvicorn times neither a connection that never sends nor
    # one that trickles its headers (gptzoo.server.connection).
    header_timeout: Seconds = 10.0
    # On SIGTERM/Ctrl-C: queued and running requests may finish for this long; later ones get 503 shutting_down.
    shutdown_timeout: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    # onnxruntime intra-op threads per model (None: onnxruntime's default, a pool that pins its threads to every core
    # itself, past any process mask; so `gptzoo serve --cpus LIST` sets one thread per pinned CPU when this is None)
    threads: Positive | None = None
    # Context policy past the window (gptzoo.zoo.context); None: each variant's family's default, slide for oss and
    # half for gpt2. slide on a gpt2 variant is refused: that variant does not load, and says why.
    policy: Literal["exact", "half", "slide"] | None = None
    # What a request whose variant's queue is full gets when it does not say (its `fallback` field): "none" answers
    # 429, "shallower" hands it to the next shallower variant of the same family that has room.
    fallback: Literal["none", "shallower"] = "none"
    ui: bool = True  # the playground page at / (`gptzoo serve --no-ui`: off)
    load_in_background: bool = False  # start answering at once; models become ready as they load
    # Seconds between rescans of the store (new, re-exported and removed variants; see gptzoo.server.reload); 0: only
    # at start and on POST /admin/reload.
    reload_interval: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    # Serve only these variants (ids or depth aliases); the others are listed as unloaded. None: every variant.
    models: Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)] | None = None
    # Speculative decoding (gptzoo.server.drafts): "TARGET=DRAFT" pairs (ids or depth aliases) and/or "auto" (each
    # variant drafted by the shallowest exported variant with its tokenizer and dataset). None: nothing drafts.
    drafts: list[Annotated[str, msgspec.Meta(pattern=r"^(auto|[^=,]+=[^=,]+)$")]] | None = None
    draft_tokens: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4  # the most tokens a draft proposes per round

    @classmethod
    def build(cls, **values) -> Settings:
        """Validated settings (a plain Struct(...) call checks neither types nor constraints)."""
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as e:
            raise BadValue(f"invalid server setting: {e}") from e

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        for f in KEY_FIELDS:
            if env_name(f) in environ and not environ[env_name(f)].strip():
                raise BadValue(f"{env_name(f)} is set but empty: give it a key, or unset it to serve without one")
        values: dict[str, object] = {f: environ[env_name(f)] for f in cls.__struct_fields__ if environ.get(env_name(f))}
        for f in _LIST_FIELDS & values.keys():
            values[f] = [x.strip() for x in str(values[f]).split(",") if x.strip()]
        return cls.build(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild these settings (how uvicorn workers get them)."""
        out = {}
        for f in self.__struct_fields__:
            v = getattr(self, f)
            if isinstance(v, list):
                out[env_name(f)] = ",".join(v)
            elif v is not None:
                out[env_name(f)] = str(v).lower() if isinstance(v, bool) else str(v)
        return out
