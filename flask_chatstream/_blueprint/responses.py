"""The blueprint's responses: every one exposes its headers to a CORS page, a stream hands the server's
``write()`` to its relay, and every error is the same JSON body."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from flask import Response
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import ClosingIterator

from .._errors import ChatStreamError, RequestTooLarge
from .._stream.relay import Relay

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("flask_chatstream")

RELAY_KEY = "chatstream.relay"
"""The relay of a stream response not yet handed to the server (``views.release_unsent`` closes it)."""

STREAM_HEADERS = {
    # no-transform asks proxies and middleware not to compress (and so buffer) the body.
    "Cache-Control": "no-cache, no-transform",
    # nginx: pass each chunk through as it comes instead of buffering the response.
    "X-Accel-Buffering": "no",
    # browsers must not hold the first bytes back to sniff the type.
    "X-Content-Type-Options": "nosniff",
}
EXPOSED = ("X-Chat-Stream-Id", "Retry-After", "RateLimit", "RateLimit-Policy")
"""Headers a cross-origin page must be able to read: the stream's id (to stop and resume it), when to
try again, and what is left of the client's budget."""


class ChatResponse(Response):
    """Every response of the blueprint. It is called after all of the host's ``after_request``
    functions, so this is where it sees a CORS response (Flask-CORS) and exposes its headers."""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if "Access-Control-Allow-Origin" in self.headers:
            listed = self.headers.get("Access-Control-Expose-Headers", "")
            have = {name.strip().lower() for name in listed.split(",")}
            missing = [name for name in EXPOSED if name in self.headers and name.lower() not in have]
            if missing:
                self.headers["Access-Control-Expose-Headers"] = ", ".join(filter(None, [listed, *missing]))
        return super().__call__(environ, start_response)


class StreamResponse(ChatResponse):
    """A stream. Hands the server's WSGI write() to the relay, for heartbeats while it waits on the
    model, and keeps the stream a stream when the host's ``after_request`` functions wrapped it."""

    warned_encoding = False
    """Said once per process: a compressor wrapped a stream."""

    def __init__(self, relay: Relay, **kwargs: Any) -> None:
        # direct_passthrough hands the relay straight to the server: no Werkzeug wrapper runs per chunk.
        super().__init__(relay, direct_passthrough=True, **kwargs)
        self.relay = relay

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        relay = self.relay
        environ[RELAY_KEY] = None  # handed to the server, which closes it
        wrapped = self.response is not relay
        if wrapped and "Content-Encoding" in self.headers:
            self._undo_compression()
            wrapped = False

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            relay.write = start_response(status, headers, exc_info)
            return relay.write

        body = super().__call__(environ, capture)
        # A body wrapped by the host (an after_request that counts bytes, say) is closed by the
        # server, but a wrapper need not close what it wraps: the relay must close all the same.
        return ClosingIterator(body, relay.close) if wrapped else body

    def _undo_compression(self) -> None:
        """Flask-Compress (or the like) wrapped the stream in a compressor. Compressors hold their
        input until they have a block's worth, so the answer would arrive all at once at the end:
        send it uncompressed, as ``Cache-Control: no-transform`` asked."""
        if not StreamResponse.warned_encoding:
            StreamResponse.warned_encoding = True
            log.warning(
                "An after_request function (Flask-Compress?) set Content-Encoding: %s on a chat stream. A "
                "compressor holds the tokens back until its buffer fills, so chat streams are sent uncompressed. "
                "To silence this, leave the chat out of compression (Flask-Compress: COMPRESS_STREAMS = False, "
                "or text/plain out of COMPRESS_MIMETYPES).", self.headers["Content-Encoding"])
        del self.headers["Content-Encoding"]
        self.headers.pop("Content-Length", None)
        close = getattr(self.response, "close", None)
        if close is not None:
            close()  # the compressor's generator, never started: nothing of the relay is lost
        self.response = self.relay
        self.direct_passthrough = True


def error_response(error: ChatStreamError | HTTPException) -> Response:
    """Our error, or an HTTP error raised on the blueprint's routes, as the JSON error body."""
    if isinstance(error, ChatStreamError):
        log.debug("chat request refused: status=%s code=%s", error.status, error.code)
        return json_error(error.status, error.code, error.message, error.headers())
    status = error.code or 500
    if status == 413:
        return json_error(413, RequestTooLarge.code, RequestTooLarge.message)
    # abort(403, "...") from a hook: the status, a code from its name, and the description given; an
    # extension's own subclass (Flask-WTF's CSRFError) is named after its class instead.
    name = error.name if type(error).__module__.startswith("werkzeug.") else type(error).__name__
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", (name or "http_error").replace("'", ""))
    code = re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")
    headers = {k: v for k, v in error.get_headers() if k.lower() in ("allow", "retry-after", "www-authenticate")}
    return json_error(status, code, error.description or error.name, headers)


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}}, headers)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """The blueprint's JSON answers (its errors, its health): never cached."""
    response = ChatResponse(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response
