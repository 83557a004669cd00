"""The Flask side: a blueprint whose view decides everything before the first byte.

Settings are resolved and the upstream client built when the blueprint is
registered, once per app and registration name, and kept in
``app.extensions["chatstream"]``. The view validates the request and opens the
upstream stream itself, so every failure up to that point is a real HTTP
status with a JSON body; only then does it hand plain data to the relay.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from flask import Blueprint, Response, current_app, request, send_file
from flask.sansio.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from ._config import Options, Settings, resolve
from ._errors import ChatStreamError, MethodNotAllowed, RequestTooLarge
from ._policy import StreamLimit
from ._relay import Relay
from ._request import check_content_type, choose_format, parse_chat_request
from ._upstream import Upstream

if TYPE_CHECKING:
    import openai
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from typing_extensions import Unpack

log = logging.getLogger("flask_chatstream")

EXTENSION_KEY = "chatstream"
CLIENT_SCRIPT = Path(__file__).with_name("static") / "chatstream.js"

STREAM_HEADERS = {
    # no-transform asks proxies and middleware not to compress (and so buffer) the body.
    "Cache-Control": "no-cache, no-transform",
    # nginx: pass each chunk through as it comes instead of buffering the response.
    "X-Accel-Buffering": "no",
    # browsers must not hold the first bytes back to sniff the type.
    "X-Content-Type-Options": "nosniff",
}


ClientKey = Callable[[], str]


def remote_address() -> str:
    """The default client key. Behind a proxy, use werkzeug's ProxyFix so this is the real client."""
    return request.remote_addr or "unknown"


@dataclass(frozen=True)
class _State:
    settings: Settings
    upstream: Upstream
    limit: StreamLimit
    client_key: ClientKey


class _StreamResponse(Response):
    """Hands the server's WSGI write() to the relay, for heartbeats while it waits on the model."""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        relay = self.response
        assert isinstance(relay, Relay)

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            relay.write = start_response(status, headers, exc_info)
            return relay.write

        return super().__call__(environ, capture)


def create_blueprint(
    name: str = "chatstream",
    *,
    client: openai.OpenAI | None = None,
    client_key: ClientKey = remote_address,
    **options: Unpack[Options],
) -> Blueprint:
    """Return a blueprint serving ``POST /chat``; register it with a ``url_prefix``.

    Keyword options override ``CHATSTREAM_*`` config keys, which override
    ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``. ``client`` takes a ready
    ``openai.OpenAI``; its own key, base URL and retries are then used.
    ``client_key`` names the client for ``max_streams_per_client``: the remote
    address by default, or, say, ``lambda: str(current_user.id)``.
    """
    if client is not None and ("api_key" in options or "base_url" in options):
        raise TypeError("create_blueprint() takes client= or api_key=/base_url=, not both.")
    blueprint = Blueprint(name, __name__)

    def register(state: BlueprintSetupState) -> None:
        settings = resolve(options, state.app.config, os.environ)
        key = f"{state.name_prefix}.{state.name}".lstrip(".")
        state.app.extensions.setdefault(EXTENSION_KEY, {})[key] = _State(
            settings, Upstream(settings, client), StreamLimit(settings.max_streams_per_client), client_key
        )

    blueprint.record(register)
    blueprint.add_url_rule("/chat", "chat", _chat, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    blueprint.add_url_rule("/chatstream.js", "client_script", _client_script)
    blueprint.register_error_handler(ChatStreamError, _error_response)
    blueprint.register_error_handler(HTTPException, _http_error_response)
    blueprint.register_error_handler(Exception, _unexpected_error_response)
    return blueprint


def _state() -> _State:
    try:
        return current_app.extensions[EXTENSION_KEY][request.blueprint]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError(
            "The chatstream blueprint has no state for this app. Did you register it with "
            "app.register_blueprint() on this app?"
        ) from None


def _chat() -> Response:
    if request.method != "POST":
        raise MethodNotAllowed()
    state = _state()
    fmt = choose_format(request.args.get("format"), request.accept_mimetypes)
    check_content_type(request.mimetype)
    settings = state.settings
    chat = parse_chat_request(_read_body(settings.max_body_bytes), settings)
    release = state.limit.acquire(state.client_key())
    try:
        stream = state.upstream.open(chat)
    except BaseException:
        release()
        raise
    relay = Relay(stream, fmt, client_fd=_client_fd(), heartbeat=settings.heartbeat, on_close=release)
    # direct_passthrough hands the relay straight to the server: no Werkzeug
    # wrapper runs per chunk.
    return _StreamResponse(relay, content_type=fmt.mimetype, headers=STREAM_HEADERS, direct_passthrough=True)


def _client_fd() -> int | None:
    """The client connection's file descriptor, from gunicorn or Werkzeug's dev server."""
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    try:
        return int(sock.fileno()) if sock is not None else None
    except (OSError, ValueError):
        return None


def _client_script() -> Response:
    # Revalidated with ETag/Last-Modified after an hour, so upgrades reach browsers.
    return send_file(CLIENT_SCRIPT, mimetype="text/javascript", max_age=3600, conditional=True)


def _read_body(limit: int) -> bytes:
    length = request.content_length
    if length is None or length <= limit:
        body: bytes = request.stream.read(limit + 1)
        if len(body) <= limit:
            return body
    raise RequestTooLarge(f"The request body is larger than {limit} bytes.")


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    response = Response(body, status=status, mimetype="application/json", headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def _error_response(error: ChatStreamError) -> Response:
    log.debug("chat request refused: status=%s code=%s", error.status, error.code)
    return json_error(error.status, error.code, error.message, error.headers())


def _http_error_response(error: HTTPException) -> Response:
    status = error.code or 500
    if status == 413:
        return _error_response(RequestTooLarge())
    return json_error(status, "http_error", error.name)


def _unexpected_error_response(error: Exception) -> Response:
    log.exception("unexpected error in the chat view")
    return json_error(500, "internal_error", ChatStreamError.message)
