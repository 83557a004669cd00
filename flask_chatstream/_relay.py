"""The per-chunk path: upstream bytes -> SSE payloads -> events -> one write.

Everything that can fail before the first byte has been decided by the view;
this only relays. After the first byte a failure becomes the stream's terminal
``error`` event (NDJSON, SSE) or a cut connection (text/plain). The upstream is
closed in ``finally`` on every path, including the one where the client leaves
and the server closes the generator.

While the upstream is silent, the watchdog calls ``heartbeat``: it writes a
ping through the server's WSGI ``write()`` when the relay is not writing itself
(the lock) and the client socket can take it without blocking.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator

from ._errors import ChatStreamError, StreamAborted
from ._events import Translator, error_event
from ._formats import Format
from ._sse import SSEParser
from ._upstream import ClientGone, UpstreamStream
from ._watchdog import WATCHDOG, writable

log = logging.getLogger("flask_chatstream")


class Relay:
    """One stream's body: an iterable the server writes out and then closes (PEP 3333)."""

    def __init__(
        self,
        stream: UpstreamStream,
        fmt: Format,
        *,
        client_fd: int | None = None,
        heartbeat: float = 0.0,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.fmt = fmt
        self.on_close = on_close
        self.write: Callable[[bytes], object] | None = None
        """The server's WSGI write(), set by the response when the server starts it."""
        self._heartbeat = heartbeat
        self._last_sent = time.monotonic()
        self._writing = threading.Lock()
        stream.client_fd = client_fd
        if heartbeat and fmt.ping and client_fd is not None:
            stream.on_tick = self.heartbeat
        self._body = self._run()

    def __iter__(self) -> Iterator[bytes]:
        return self._body

    def close(self) -> None:
        """The server is done with the body, perhaps because the client left: stop the upstream."""
        if inspect.getgeneratorstate(self._body) == inspect.GEN_CREATED:
            self._release()  # never started, so its finally will not run
        self._body.close()

    def _release(self) -> None:
        """Drop the upstream connection and give back the client's stream slot."""
        self.stream.close()
        if self.on_close is not None:
            self.on_close()

    def _run(self) -> Generator[bytes, None, None]:
        stream, fmt = self.stream, self.fmt
        encode = fmt.encode
        parser = SSEParser()
        translator = Translator()
        started = time.monotonic()
        outcome = "client_left"
        WATCHDOG.watch(stream)
        try:
            for data in stream:
                if translator.finished:
                    continue  # drain to the end so the connection can be reused
                payloads = parser.feed(data)
                if payloads:
                    events = translator.feed(payloads)
                    if events:
                        out = encode(events)
                        if out:
                            with self._writing:
                                yield out
                            self._last_sent = stream.last_read
            if not translator.finished:
                events = translator.feed(parser.close())
                if not translator.finished:
                    events += translator.end_of_stream()
                out = encode(events)
                if out:
                    with self._writing:
                        yield out
            outcome = "done"
        except ClientGone:
            pass  # nobody is listening: end without another write
        except ChatStreamError as error:
            outcome = error.code
            if not fmt.in_band_errors:
                raise StreamAborted(error) from None
            with self._writing:
                yield encode([error_event(error)])
        finally:
            WATCHDOG.forget(stream)
            self._release()
            usage = translator.usage or {}
            log.info(
                "stream id=%s outcome=%s format=%s chunks=%d duration_ms=%d finish_reason=%s "
                "prompt_tokens=%s completion_tokens=%s",
                translator.id,
                outcome,
                fmt.name,
                translator.chunks,
                (time.monotonic() - started) * 1000,
                translator.finish_reason,
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
            )

    def heartbeat(self, now: float) -> None:
        """Called by the watchdog on every tick."""
        write = self.write
        if write is None or now - max(self._last_sent, self.stream.last_read) < self._heartbeat:
            return
        if not self._writing.acquire(blocking=False):
            return  # the relay is writing: that is activity enough
        try:
            if self.stream.client_fd is not None and writable(self.stream.client_fd):
                write(self.fmt.ping)
                self._last_sent = now
        except OSError:
            pass  # the client is gone; the next tick sees its hang-up
        finally:
            self._writing.release()
