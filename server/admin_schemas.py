"""Bodies of the admin API (/admin/*: the live zoo's state and controls), as msgspec Structs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

State = Literal["loading", "ready", "failed", "not_exported", "unloaded"]


class NextVersion(msgspec.Struct, kw_only=True):
    """A new version of a variant that serves: loading beside it, or failed to load (the old one serves on);
    `ready` only for the moment before it takes over."""

    state: Literal["loading", "ready", "failed", "not_exported"]
    sha256: str | None
    reason: str | None


class AdminModel(msgspec.Struct, kw_only=True):
    id: str
    state: State
    ready: bool
    reason: str | None
    sha256: Annotated[str | None, Meta(description="Of the ONNX file this version serves (or would).")]
    loaded_at: Annotated[datetime | None, Meta(description="When this version became ready (UTC).")]
    provider: str | None
    n_layer: int | None
    dataset: str | None
    arch: Annotated[str | None, Meta(description="The block family (gpt2 or oss); null: the card is broken.")] = None
    family: Annotated[str | None, Meta(description="The family id the variant routes in.")] = None
    aliases: list[str]
    requests: Annotated[int, Meta(description="Requests it holds: queued or running.")]
    draft: Annotated[str | None, Meta(description="The variant drafting for this version (speculative decoding), "
                                                  "opened when it loaded; null: none.")] = None
    next: NextVersion | None


class DrainingModel(msgspec.Struct, kw_only=True):
    """A version taken out of service (re-exported, removed from the store, or unloaded) that finishes its
    requests before it unloads."""

    id: str
    sha256: str | None
    loaded_at: datetime | None
    requests: int


class AdminModels(msgspec.Struct, kw_only=True):
    data: list[AdminModel]
    draining: list[DrainingModel]


class ReloadReport(msgspec.Struct, kw_only=True):
    """What a rescan of the store changed; loads go on in the background (GET /admin/models follows them)."""

    added: list[str]
    changed: list[str]
    removed: list[str]
