"""An incremental parser for the upstream's Server-Sent Events, over raw bytes.

It is pure (no Flask, no openai) and fed whatever one network read returned, so
an event, a line or a multi-byte character may be split anywhere. Only the
``data`` field matters for chat completions: ``event``, ``id``, ``retry`` and
comments are skipped. Line endings follow the SSE spec: CRLF, LF or CR.

Work is linear in the bytes fed: a line that has not ended yet is kept as a list
of pieces and joined once, when its end arrives. One event may hold at most
``max_event_bytes``; past that the parser stops and sets ``too_large``, since an
upstream that never ends a line would otherwise grow the buffer without bound.
"""

from __future__ import annotations


class SSEParser:
    """Turns byte chunks into the ``data`` payloads of complete events."""

    __slots__ = ("_tail", "_tail_size", "_data", "_data_size", "max_event_bytes", "too_large")

    def __init__(self, max_event_bytes: int = 1024 * 1024) -> None:
        self._tail: list[bytes] = []
        self._tail_size = 0
        self._data: list[bytes] = []
        self._data_size = 0
        self.max_event_bytes = max_event_bytes
        self.too_large = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the payloads of the events that ``chunk`` completes, in order.

        Once an event outgrows ``max_event_bytes`` it returns what came before it, and then
        nothing more: ``too_large`` is set.
        """
        if self.too_large:
            return []
        if b"\n" not in chunk and b"\r" not in chunk:
            self._tail.append(chunk)
            self._tail_size += len(chunk)
            self._check()
            return []
        if self._tail:
            self._tail.append(chunk)
            buf = b"".join(self._tail)
            self._tail.clear()
        else:
            buf = chunk
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF: keep it back.
            keep_cr = buf.endswith(b"\r")
            if keep_cr:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buf += b"\r"
        lines = buf.split(b"\n")
        tail = lines.pop()
        if tail:
            self._tail.append(tail)
        self._tail_size = len(tail)
        payloads: list[bytes] = []
        data = self._data
        limit = self.max_event_bytes
        for line in lines:
            if not line:
                if data:
                    payloads.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
                    self._data_size = 0
            elif line.startswith(b"data:"):
                value = line[5:]
                value = value[1:] if value.startswith(b" ") else value
                self._data_size += len(value) + 1
                if self._data_size > limit:
                    self.too_large = True
                    return payloads
                data.append(value)
            # comments (":...") and other fields are ignored
        self._check()
        return payloads

    def _check(self) -> None:
        if self._tail_size + self._data_size > self.max_event_bytes:
            self.too_large = True
            self._tail.clear()
            self._data.clear()

    def close(self) -> list[bytes]:
        """Flush an event that the stream ended without a blank line after."""
        payloads = self.feed(b"\n\n") if (self._tail or self._data) else []
        self._tail.clear()
        self._tail_size = 0
        return payloads
