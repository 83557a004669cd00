"""The default client's requests, sent without the SDK's per-call machinery.

What does not change from one request to the next (the URL, and the headers the openai client
sends: auth, user agent, its ``X-Stainless-*``) is taken once, from a request the openai client
builds itself (``client``), and kept as the bytes of a request head. Each call then only
serializes its body and writes both on a connection of ``ChatTransport``'s. The SDK's own request
path (options copied and validated, typed params walked, an httpx request and its send) cost most
of the CPU of opening a stream; this keeps the same request on the wire without it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .transport import Body, Cancel, ChatTransport, Origin

_PER_REQUEST = (b"content-length", b"transfer-encoding", b"x-stainless-retry-count")


class Direct:
    """Sends the request the SDK would have sent, with another body."""

    __slots__ = ("transport", "origin", "_head", "_timeouts")

    def __init__(self, transport: ChatTransport, origin: Origin, method: str, path: bytes,
                 headers: Sequence[tuple[bytes, bytes]], timeouts: dict[str, float | None]) -> None:
        self.transport = transport
        self.origin = origin
        lines = [method.encode() + b" " + path + b" HTTP/1.1"]
        for name, value in headers:
            lower = name.lower()
            if lower in _PER_REQUEST:
                continue
            if lower == b"accept-encoding":
                value = b"identity"  # the body is read as it comes off the socket: no compression
            lines.append(name + b": " + value)
        self._head = b"\r\n".join(lines) + b"\r\nx-stainless-retry-count: %d\r\nContent-Length: %d\r\n\r\n"
        self._timeouts = timeouts

    def send(self, body: bytes, retries_taken: int = 0,
             cancel: Cancel | None = None) -> tuple[int, list[tuple[bytes, bytes]], Body]:
        """Its status, headers and body to read; httpx's transport errors when it cannot be sent."""
        status, _, headers, stream = self.transport.send(
            self.origin, "POST", self._head % (retries_taken, len(body)), body, self._timeouts, cancel)
        return status, headers, stream
