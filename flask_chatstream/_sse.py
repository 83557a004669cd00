"""An incremental parser for the upstream's Server-Sent Events, over raw bytes.

It is pure (no Flask, no openai) and fed whatever one network read returned, so
an event, a line or a multi-byte character may be split anywhere. Only the
``data`` field matters for chat completions: ``event``, ``id``, ``retry`` and
comments are skipped. Line endings follow the SSE spec: CRLF, LF or CR.
"""

from __future__ import annotations


class SSEParser:
    """Turns byte chunks into the ``data`` payloads of complete events."""

    __slots__ = ("_tail", "_data")

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the payloads of the events that ``chunk`` completes, in order."""
        buf = self._tail + chunk if self._tail else chunk
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF: keep it back.
            keep_cr = buf.endswith(b"\r")
            if keep_cr:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buf += b"\r"
        lines = buf.split(b"\n")
        self._tail = lines.pop()
        payloads: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    payloads.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            # comments (":...") and other fields are ignored
        return payloads

    def close(self) -> list[bytes]:
        """Flush an event that the stream ended without a blank line after."""
        payloads = self.feed(b"\n\n") if (self._tail or self._data) else []
        self._tail = b""
        return payloads
