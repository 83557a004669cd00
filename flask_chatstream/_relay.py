"""The per-chunk path: upstream bytes -> SSE payloads -> events -> one write.

Everything that can fail before the first byte has been decided by the view;
this generator only relays. After the first byte a failure becomes the
stream's terminal ``error`` event (NDJSON, SSE) or a cut connection
(text/plain). The upstream is closed in ``finally`` on every path, including
the one where the client leaves and the server closes this generator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from ._errors import ChatStreamError, StreamAborted
from ._events import Translator, error_event
from ._formats import Format
from ._sse import SSEParser
from ._upstream import ClientGone, UpstreamStream
from ._watchdog import WATCHDOG

log = logging.getLogger("flask_chatstream")


def relay(stream: UpstreamStream, fmt: Format, client_fd: int | None = None) -> Iterator[bytes]:
    """``client_fd`` is the client's socket, when the server gives it, so that a client who leaves
    while the upstream is silent is noticed too."""
    encode = fmt.encode
    parser = SSEParser()
    translator = Translator()
    started = time.monotonic()
    outcome = "client_left"
    stream.client_fd = client_fd
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
                        yield out
        if not translator.finished:
            events = translator.feed(parser.close())
            if not translator.finished:
                events += translator.end_of_stream()
            out = encode(events)
            if out:
                yield out
        outcome = "done"
    except ClientGone:
        pass  # nobody is listening: end without another write
    except ChatStreamError as error:
        outcome = error.code
        if not fmt.in_band_errors:
            raise StreamAborted(error) from None
        yield encode([error_event(error)])
    finally:
        WATCHDOG.forget(stream)
        stream.close()
        usage = translator.usage or {}
        log.info(
            "stream outcome=%s format=%s chunks=%d duration_ms=%d finish_reason=%s "
            "prompt_tokens=%s completion_tokens=%s",
            outcome,
            fmt.name,
            translator.chunks,
            (time.monotonic() - started) * 1000,
            translator.finish_reason,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
        )
