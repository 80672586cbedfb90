"""What a model's worker thread tells the HTTP side about one job, in order: TextDelta* (streams only), then exactly
one of Done or Failed. Typed, so neither side unpacks tuples by position."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str  # new text since the last delta (never splits a UTF-8 character or a possible stop sequence)


@dataclass(frozen=True, slots=True)
class Done:
    text: str  # the whole completion
    finish_reason: str  # stop or length
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Failed:
    message: str
    code: str  # why (gptzoo.server.errors maps it to an HTTP status); also the request's outcome label
    retry_after: str | None = None  # seconds, for a job refused before it ran (gptzoo.server.refusals)


Event = TextDelta | Done | Failed
