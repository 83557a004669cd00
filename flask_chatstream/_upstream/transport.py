"""The default client's way onto the network: HTTP/1.1 over sockets this module owns.

The openai client still builds and sends every request (auth, headers, typed status errors); this
is the transport under its httpx client. It exists because a relay needs what a general-purpose
pool cannot give it cheaply:

- **One connection per stream, owned.** The watchdog may shut a stream's socket down to wake its
  blocked read (the client left, the upstream went silent). That is only safe on a socket no other
  request shares, so there is no HTTP/2 and no pipelining here.
- **O(1) open and close.** Idle connections wait in a stack per origin (a deque): take the newest,
  put back on top, drop the oldest when full or expired. Nothing walks every connection.
- **The body straight off the socket.** One ``recv`` per network read, chunked framing removed in
  place, no per-event layers above it. The stream knows whether the body ended cleanly, so a
  connection whose answer is complete goes back to the stack and the next request skips the
  TCP and TLS handshakes.

The response head is parsed here too, strictly (RFC 9112): one status line, token header names, no
folded lines, and framing that cannot be read two ways. Conflicting ``Content-Length`` values and any
transfer coding other than a final ``chunked`` are errors; a response with both a length and
``chunked`` is read as chunked and its connection is never reused. h11 would do the same at about
12 times the CPU per head (53 µs against 4 µs here, measured), a few per cent of a whole request.

The head has one deadline, the read timeout from when the request went out: an upstream that drips
its head a byte at a time, or sends ``103 Early Hints`` forever, cannot hold a request past it.
A ``Cancel`` lets another greenlet or thread abandon the exchange before the head arrives (the
client left while a gateway held the head back): it shuts the connection's socket down.

Proxies from the environment are not this transport's: ``client`` mounts httpx's own proxy
transports for them, exactly as httpx's ``trust_env`` would.

One job, and over 400 lines because HTTP/1.1's framing is parsed by hand here: the sockets under the openai client.
"""

from __future__ import annotations

import collections
import re
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

from .._gevent import poll_now
from .._sockets import shutdown

try:
    import httpx2 as http
except ImportError:  # pragma: no cover - older openai releases run on httpx
    import httpx as http  # type: ignore[no-redef,import-not-found]

HTTP_LIBRARY = http.__name__

Origin = tuple[bytes, str, int]

READ_SIZE = 65536
MAX_HEAD_BYTES = 64 * 1024
KEEPALIVE_EXPIRY = 15.0
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;.*)?")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_STALE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | getattr(select, "POLLRDHUP", 0)


class ProtocolError(Exception):
    """The upstream broke HTTP/1.1 framing."""


class Cancelled(Exception):
    """The exchange was cancelled (``Cancel``) before the response head arrived."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Cancel:
    """A way for another greenlet or thread to abandon one request while it waits for its head.

    The transport says which socket the request is on; ``cancel`` shuts it down, which wakes the
    blocked connect-or-read at once. The request then raises ``Cancelled``, never retried."""

    __slots__ = ("reason", "sock", "interrupt")

    def __init__(self) -> None:
        self.reason: str | None = None
        self.sock: socket.socket | None = None
        self.interrupt: Callable[[BaseException], None] | None = None
        """Where the socket is out of reach (an httpx client's, until its head is in): raises the
        exception where the request waits (``_gevent.interruptible``)."""

    def cancel(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        sock, interrupt = self.sock, self.interrupt
        if sock is not None:
            shutdown(sock)
        elif interrupt is not None:
            interrupt(Cancelled(self.reason))

    def check(self) -> None:
        if self.reason is not None:
            raise Cancelled(self.reason)


class Connection:
    __slots__ = ("sock", "origin", "idle_since")

    def __init__(self, sock: socket.socket, origin: Origin) -> None:
        self.sock = sock
        self.origin = origin
        self.idle_since = 0.0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ChatTransport(http.BaseTransport):
    """An httpx transport with a stack of idle HTTP/1.1 connections per origin."""

    def __init__(self, *, max_idle: int = 100, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_idle = max_idle
        self._ssl_context = ssl_context
        self._idle: dict[Origin, collections.deque[Connection]] = {}

    def handle_request(self, request: Any) -> Any:
        """httpx's entry: the SDK's requests (retries and all) for the default client."""
        url = request.url
        origin: Origin = (url.raw_scheme, url.host, url.port or (443 if url.raw_scheme == b"https" else 80))
        body = request.read()
        try:
            status, reason, headers, stream = self.send(origin, request.method, _request_head(request, body), body,
                                                        request.extensions.get("timeout", {}))
        except http.TransportError as exc:
            exc.request = request
            raise
        return http.Response(status, headers=headers, stream=stream, request=request,
                             extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason,
                                         "chatstream_body": stream})

    def send(self, origin: Origin, method: str, head: bytes, body: bytes, timeouts: dict[str, float | None],
             cancel: Cancel | None = None) -> tuple[int, bytes, list[tuple[bytes, bytes]], Body]:
        """Send one request on a connection of the origin's (a fresh one if a reused one turns out
        closed): its status, reason, headers, and the body to read. Raises httpx's transport errors,
        or ``Cancelled``."""
        while True:
            connection, reused = self._connection(origin, timeouts.get("connect"))
            try:
                if cancel is not None:
                    cancel.sock = connection.sock
                    cancel.check()
                return self._exchange(connection, method, head, body, timeouts)
            except _Stale:
                connection.close()
                if cancel is not None:
                    cancel.check()
                if not reused:
                    raise http.RemoteProtocolError("Server disconnected without sending a response.") from None
            except BaseException:
                connection.close()
                if cancel is not None:
                    cancel.check()
                raise
            finally:
                if cancel is not None:
                    cancel.sock = None

    def close(self) -> None:
        for stack in self._idle.values():
            while stack:
                stack.pop().close()
        self._idle.clear()

    # -- connections -----------------------------------------------------------------------------

    def _connection(self, origin: Origin, connect_timeout: float | None) -> tuple[Connection, bool]:
        stack = self._idle.get(origin)
        now = time.monotonic()
        while stack:
            connection = stack.pop()
            if now - connection.idle_since < KEEPALIVE_EXPIRY and not _stale(connection.sock):
                return connection, True
            connection.close()
        return Connection(self._connect(origin, connect_timeout), origin), False

    def _connect(self, origin: Origin, timeout: float | None) -> socket.socket:
        scheme, host, port = origin
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError as exc:
            raise http.ConnectTimeout(str(exc) or "connect timed out") from None
        except OSError as exc:
            raise http.ConnectError(str(exc)) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == b"https":
                sock = self._tls().wrap_socket(sock, server_hostname=host)
        except TimeoutError as exc:
            sock.close()
            raise http.ConnectTimeout(str(exc) or "TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise http.ConnectError(str(exc)) from None
        return sock

    def _tls(self) -> ssl.SSLContext:
        # Built on first use, in the worker: after gevent patched ssl, and honouring SSL_CERT_FILE.
        if self._ssl_context is None:
            context = http.create_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    def release(self, connection: Connection) -> None:
        """Put a connection whose last response ended cleanly back on its stack."""
        stack = self._idle.setdefault(connection.origin, collections.deque())
        connection.idle_since = now = time.monotonic()
        stack.append(connection)
        # Keep the stack bounded, and shed expired connections from the old end, one per release.
        if len(stack) > self.max_idle or now - stack[0].idle_since >= KEEPALIVE_EXPIRY:
            stack.popleft().close()

    def idle_connections(self) -> int:
        return sum(len(stack) for stack in self._idle.values())

    # -- one exchange ----------------------------------------------------------------------------

    def _exchange(self, connection: Connection, method: str, head: bytes, body: bytes,
                  timeouts: dict[str, float | None]) -> tuple[int, bytes, list[tuple[bytes, bytes]], Body]:
        sock = connection.sock
        sock.settimeout(timeouts.get("write"))
        try:
            sock.sendall(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                sock.sendall(body)
        except TimeoutError:
            raise http.WriteTimeout("write timed out") from None
        except OSError as exc:
            raise _Stale() if isinstance(exc, (BrokenPipeError, ConnectionResetError)) else \
                http.WriteError(str(exc)) from None

        read_timeout = timeouts.get("read")
        deadline = None if read_timeout is None else time.monotonic() + read_timeout
        buffer = b""
        received = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise http.RemoteProtocolError("The response head is too large.")
                data = _recv(sock, deadline)
                if not data:
                    if received:
                        raise http.RemoteProtocolError("Server disconnected in the response head.")
                    raise _Stale()
                received += len(data)
                buffer += data
                end = buffer.find(b"\r\n\r\n")
            version, status, reason, headers = _parse_head(buffer[:end])
            buffer = buffer[end + 4:]
            if status >= 200 or status == 101:
                break  # 1xx informational responses (100 Continue, 103 Early Hints) are skipped, within the deadline
        stream = Body(self, connection, buffer, _framing(method, status, version, headers), read_timeout)
        return status, reason, headers, stream


class _Stale(Exception):
    """A reused connection turned out to be closed before any response byte: try a fresh one."""


def _stale(sock: socket.socket) -> bool:
    """An idle connection with anything to read has been closed (or broken) by the server."""
    try:
        return bool(poll_now(sock.fileno(), _STALE))
    except (OSError, ValueError):
        return True


def _recv(sock: socket.socket, deadline: float | None) -> bytes:
    """One read of the response head, within what is left of its deadline."""
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise http.ReadTimeout("no complete response head within the read timeout")
        sock.settimeout(left)
    else:
        sock.settimeout(None)
    try:
        return sock.recv(READ_SIZE)
    except TimeoutError:
        raise http.ReadTimeout("read timed out") from None
    except (OSError, ValueError) as exc:
        raise http.ReadError(str(exc) or type(exc).__name__) from None


def _request_head(request: Any, body: bytes) -> bytes:
    lines = [request.method.encode() + b" " + request.url.raw_path + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower == b"transfer-encoding":  # the body is in memory: send it with a length
            name, value = b"Content-Length", str(len(body)).encode()
        elif lower == b"accept-encoding":
            value = b"identity"  # the body is read as it comes off the socket: no compression
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _parse_head(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    """The HTTP version, status, reason and header fields of a response head, checked (RFC 9112)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if (len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
            or not (parts[1].isdigit() and len(parts[1]) == 3 and parts[1].isascii())):
        raise http.RemoteProtocolError("The response does not start with an HTTP/1.x status line.")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        # No folded lines, no space before the colon, nothing but a token as the name (RFC 9112 5.1).
        if not colon or _TOKEN.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            raise http.RemoteProtocolError("The response has a malformed header line.")
        headers.append((name, value.strip(b" \t")))
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


def _framing(method: str, status: int, version: bytes,
             headers: list[tuple[bytes, bytes]]) -> tuple[str, int, bool]:
    """How the body ends (``"none"``, ``"chunked"``, ``"length"``, ``"close"``), its length, and
    whether the connection may be reused after it (RFC 9112 6.3). Anything that could be read two
    ways is an error, or at least never leaves a connection to reuse."""
    codings: list[bytes] = []
    lengths: set[bytes] = set()
    keep_alive = version == b"HTTP/1.1"
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            codings.extend(coding.strip(b" \t").lower() for coding in value.split(b","))
        elif lower == b"content-length":
            lengths.update(length.strip(b" \t") for length in value.split(b","))
        elif lower == b"connection" and b"close" in (token.strip(b" \t").lower() for token in value.split(b",")):
            keep_alive = False
    if method == "HEAD" or status in (204, 304):
        return "none", 0, keep_alive
    if codings:
        if codings != [b"chunked"]:
            raise http.RemoteProtocolError("The response's Transfer-Encoding is not just chunked.")
        # A length beside chunked is ignored for the body, and the connection is not trusted again.
        return "chunked", 0, keep_alive and not lengths
    if lengths:
        if len(lengths) != 1:
            raise http.RemoteProtocolError("The response has conflicting Content-Length values.")
        [length] = lengths
        if not (length.isdigit() and length.isascii() and len(length) <= 15):
            raise http.RemoteProtocolError("The response has a malformed Content-Length.")
        return "length", int(length), keep_alive
    return "close", 0, False


class Body(http.SyncByteStream):
    """One response body, read off its socket. Iterate once; always ``close``.

    Each item is what one network read brought, with chunked framing removed. ``complete`` says
    whether the body ended as its framing says it must; only then can the connection be reused.
    """

    def __init__(self, transport: ChatTransport, connection: Connection, buffered: bytes,
                 framing: tuple[str, int, bool], read_timeout: float | None) -> None:
        self._transport = transport
        self.connection = connection
        self.sock = connection.sock
        self._buffered = buffered
        self._mode, self._left, self._keep_alive = framing
        self._state = "size"  # chunked: size, data, crlf, trailer, done
        self._pending = b""
        self.complete = self._mode == "none"
        self.closed = False
        self.read_timeout = read_timeout
        self._reading = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.read, None)  # ends at read's StopIteration (read never returns None)

    def read(self) -> bytes:
        """What the next network read brings, without its framing (never empty); ``StopIteration`` at
        the body's end. A plain call, not a generator: a stream that waits here holds no generator's
        frame, and the greenlet's saved stack is one interpreter frame shallower."""
        if self.complete:
            raise StopIteration
        if not self._reading:
            self._reading = True
            self.sock.settimeout(self.read_timeout)
        data, self._buffered = self._buffered, b""
        while True:
            if data:
                try:
                    out = self._dechunk(data) if self._mode == "chunked" else self._count(data)
                except ProtocolError as exc:
                    raise http.RemoteProtocolError(str(exc)) from None
                if out:
                    return out
                if self.complete:
                    raise StopIteration
            try:
                data = self.sock.recv(READ_SIZE)
            except TimeoutError:
                raise http.ReadTimeout("read timed out") from None
            except (OSError, ValueError) as exc:
                raise http.ReadError(str(exc) or type(exc).__name__) from None
            if not data:
                if self._mode == "close":
                    self.complete = True
                    raise StopIteration
                raise http.RemoteProtocolError("peer closed connection without sending complete message body")

    def ready(self, timeout: float) -> bool:
        """Has the next read something to bring, or will it within ``timeout`` seconds? (A read
        that has the start of a TLS record or a chunk may still wait a moment for the rest.)"""
        if self._buffered or self.complete:
            return True
        pending = getattr(self.sock, "pending", None)  # TLS: records already decrypted
        if pending is not None and pending():
            return True
        poller = select.poll()  # looked up now: gevent's, where it patched select, which yields
        poller.register(self.sock, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(max(0.0, timeout) * 1000))

    def unbounded(self) -> None:
        """From now on reads wait as long as it takes: the watchdog enforces the read timeout.

        (Under gevent a socket with a timeout starts and cancels a timer on every blocking read.)"""
        self.read_timeout = None
        self.sock.settimeout(None)

    def finish(self, allowance: int, wait: float) -> bool:
        """Read what is left of the body, if it is at most ``allowance`` payload bytes and arrives
        within ``wait`` seconds, so the connection can be reused. Anything more is not read.

        The answer is complete before its body is: at ``[DONE]``, or at the usage chunk just before
        it. What follows is the ``[DONE]`` line at most and the chunked terminator, which usually
        arrive together; an upstream that holds the connection, or keeps sending, is not waited for.
        """
        if self.complete or self._mode != "chunked":
            return self.complete
        data, self._buffered = self._buffered, b""
        deadline = time.monotonic() + wait
        try:
            while True:
                if data:
                    allowance -= len(self._dechunk(data))
                    if allowance < 0:
                        return False
                if self.complete:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                data = self.sock.recv(READ_SIZE)
                if not data:
                    return False
        except (OSError, ValueError, ProtocolError):
            return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.complete and self._keep_alive and not self._buffered and not self._pending:
            self._transport.release(self.connection)
        else:
            self.connection.close()

    def _count(self, data: bytes) -> bytes:
        if self._mode == "length":
            if len(data) >= self._left:
                data = data[: self._left]
                self.complete = True
            self._left -= len(data)
        return data

    def _dechunk(self, data: bytes) -> bytes:
        """Remove chunked framing from one read's bytes, in one pass."""
        if self._pending:
            data = self._pending + data
            self._pending = b""
        out: list[bytes] = []
        pos, end = 0, len(data)
        left = self._left
        state = self._state
        while pos < end:
            if state == "data":
                take = min(left, end - pos)
                out.append(data if take == end else data[pos : pos + take])  # take == end: pos is 0
                pos += take
                left -= take
                if not left:
                    state = "crlf"
            elif state == "size":
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > 1024:
                        raise ProtocolError("a chunk-size line is too long")
                    self._pending = data[pos:]
                    break
                match = _CHUNK_SIZE.fullmatch(data, pos, eol)
                if match is None:
                    raise ProtocolError("a chunk-size line is malformed")
                left = int(match.group(1), 16)
                pos = eol + 2
                state = "data" if left else "trailer"
            elif state == "crlf":
                if end - pos < 2:
                    self._pending = data[pos:]
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("a chunk does not end with CRLF")
                pos += 2
                state = "size"
            elif state == "trailer":
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > 8192:
                        raise ProtocolError("the chunked trailer is too long")
                    self._pending = data[pos:]
                    break
                state = "done" if eol == pos else "trailer"
                pos = eol + 2
            else:  # done: anything after the terminator is not ours
                self._buffered = data[pos:]
                break
        self._left, self._state = left, state
        if state == "done":
            self.complete = True
        return out[0] if len(out) == 1 else b"".join(out)
