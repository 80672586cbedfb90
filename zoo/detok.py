"""Detokenising a row's output as it is generated: the text that is safe to stream now, held back where a stop
sequence could still complete or a UTF-8 character is still split between tokens."""

from __future__ import annotations

import codecs

from gptzoo.zoo.tokenizers import Tokenizer


class StopText:
    """Incremental text of a row's generated tokens: what is safe to emit now, and whether a stop sequence hit.
    Text that could still become a stop sequence is held back; an incremental UTF-8 decoder holds back the bytes of
    a character a BPE token split. Each token costs the same however long the text already is: only the text not
    emitted yet (at most the longest stop sequence, plus the token's own text) is searched or copied."""

    def __init__(self, tokenizer: Tokenizer, stop: list[str]):
        self.tok, self.stop = tokenizer, stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._emitted: list[str] = []  # the deltas returned so far
        self._pending = ""  # decoded but held back
        self.stopped = False

    @property
    def text(self) -> str:
        """The text so far (final once stopped or finished)."""
        if len(self._emitted) > 1:
            self._emitted = ["".join(self._emitted)]
        return (self._emitted[0] if self._emitted else "") + self._pending

    def push(self, token: int) -> str:
        pending = self._pending + self._utf8.decode(self.tok.decode_bytes([token]))
        # A stop sequence completed by this token starts inside the held-back text: whatever was emitted lies more
        # than `hold` characters back. The earliest start wins, whatever the order of the list.
        at = -1
        for s in self.stop:
            i = pending.find(s)
            if i != -1 and (at == -1 or i < at):
                at = i
        if at != -1:
            self.stopped = True
            return self._emit(pending[:at], at)
        return self._emit(pending, max(len(pending) - self.hold, 0))

    def finish(self) -> str:
        if self.stopped:
            return ""
        # a dangling partial character becomes U+FFFD
        pending = self._pending + self._utf8.decode(b"", final=True)
        return self._emit(pending, len(pending))

    def _emit(self, pending: str, upto: int) -> str:
        delta, self._pending = pending[:upto], pending[upto:]
        if delta:
            self._emitted.append(delta)
        return delta
