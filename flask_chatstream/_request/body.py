"""The request body, read within its limits: its size, and the time the client may take to send it."""

from __future__ import annotations

import logging
import socket

from flask import request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from .._config import Settings
from .._errors import BodyTimeout, RequestError, RequestTooLarge
from .._watchdog import WATCHDOG, Deadline

log = logging.getLogger("flask_chatstream")


def read_body(settings: Settings, client: socket.socket | None) -> bytes:
    """The whole request body, within ``max_body_bytes`` and ``body_timeout``.

    It is read the way Werkzeug reads it, ``request.get_data()``, so it is cached: the host app's own
    code (audit logging, a limiter's key function) can still call ``request.get_json()``, and when such
    code has read it first, this is that cached body, held to the same size limit.

    A body that trickles in is cut at the timeout (408), whatever its pace: the deadline is for the
    whole body, kept by the watchdog, which shuts the socket's reading side so the server's read
    ends at once (and the server cannot wait for the rest before closing). A malformed or abandoned
    chunked body, or one shorter than its Content-Length, is a 400 with only a debug line in the log.
    """
    limit = settings.max_body_bytes
    host_limit = request.max_content_length  # the app's MAX_CONTENT_LENGTH, when it is smaller
    if host_limit is not None and host_limit < limit:
        limit = host_limit
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
    # A chunked body has no length to check: read at most one byte past the limit, so one that passes it
    # is a 413 as soon as it does (Werkzeug's limited stream stops at its limit without a word, and
    # a body cut there would be parsed as if it were whole).
    request.max_content_length = limit + 1 if length is None else limit
    deadline = None
    if client is not None:
        deadline = Deadline(settings.body_timeout, lambda: _shut_reading(client))
        WATCHDOG.watch(deadline)
    failure: Exception | None = None
    body = b""
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise RequestTooLarge(f"The request body is larger than {limit} bytes.") from None
    except Exception as error:  # the server's own parse errors (a broken chunked body), a short body
        failure = error
    finally:
        if deadline is not None:
            WATCHDOG.forget(deadline)
    if deadline is not None and deadline.expired and (failure is not None or (length or 0) > len(body)):
        raise BodyTimeout()
    if failure is not None:
        log.debug("request body could not be read: %s", type(failure).__name__)
        if isinstance(failure, ClientDisconnected):
            raise RequestError("The request body is shorter than its Content-Length.", code="invalid_body")
        raise RequestError("The request body could not be read.", code="invalid_body")
    if len(body) > limit:  # read before this, by the host's code, without the limit
        raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
    if length is not None and len(body) < length:
        raise RequestError("The request body is shorter than its Content-Length.", code="invalid_body")
    return body


def _shut_reading(client: socket.socket) -> None:
    try:
        client.shutdown(socket.SHUT_RD)
    except OSError:
        pass
