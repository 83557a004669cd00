"""The request body, read within its limits: its size, and the time the client may take to send it."""

from __future__ import annotations

import logging
import socket

from flask import request
from werkzeug.exceptions import HTTPException

from ._config import Settings
from ._errors import RequestError, RequestTimeout, RequestTooLarge
from ._watchdog import WATCHDOG, Deadline

log = logging.getLogger("flask_chatstream")


def read_body(settings: Settings, client: socket.socket | None) -> bytes:
    """The whole request body, within ``max_body_bytes`` and ``body_timeout``.

    A body that trickles in is cut at the timeout (408), whatever its pace: the deadline is for the
    whole body, kept by the watchdog, which shuts the socket's reading side so the server's read
    ends at once (and the server cannot wait for the rest before closing). A malformed or abandoned
    chunked body, or one shorter than its Content-Length, is a 400 with only a debug line in the log.
    """
    limit = settings.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
    stream = request.stream
    deadline = None
    if client is not None:
        deadline = Deadline(settings.body_timeout, lambda: _shut_reading(client))
        WATCHDOG.watch(deadline)
    pieces: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            piece = stream.read(min(65536, limit + 1 - size))
            if not piece:
                break
            pieces.append(piece)
            size += len(piece)
    except HTTPException as error:
        if error.code == 413:
            raise
        failure: Exception | None = error
    except Exception as error:  # the server's own parse errors (a broken chunked body)
        failure = error
    else:
        failure = None
    finally:
        if deadline is not None:
            WATCHDOG.forget(deadline)
    if deadline is not None and deadline.expired and (failure is not None or (length or 0) > size):
        raise RequestTimeout()
    if failure is not None:
        log.debug("request body could not be read: %s", type(failure).__name__)
        raise RequestError("The request body could not be read.", code="invalid_body")
    if size > limit:
        raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
    if length is not None and size < length:
        raise RequestError("The request body is shorter than its Content-Length.", code="invalid_body")
    return b"".join(pieces)


def _shut_reading(client: socket.socket) -> None:
    try:
        client.shutdown(socket.SHUT_RD)
    except OSError:
        pass
