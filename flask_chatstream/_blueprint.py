"""The Flask side: a blueprint whose view decides everything before the first byte.

Settings are resolved and the upstream client built when the blueprint is
registered, once per app and registration name, and kept in
``app.extensions["chatstream"]``. The view validates the request, opens the
upstream stream and reads ahead to the answer's first event itself, so every
failure up to that point is a real HTTP status with a JSON body; only then does
it hand plain data to the relay.

The view turns its own errors into JSON responses, and the blueprint's error handler does the same
for every HTTP error raised on its routes before the view runs (the host's ``before_request``
functions, Flask-Login, Flask-Limiter, Flask-WTF's CSRF check). A handler the host registered for a
specific status still wins, as Flask's own lookup order says.

The chat body is read first of all, by an app-level ``before_request`` function that runs before the
host's own, under the blueprint's size and time limits. Werkzeug caches it, so host code that calls
``request.get_json()`` gets it too.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, NamedTuple, TypeVar, overload

import orjson
from flask import Blueprint, Response, current_app, got_request_exception, request, send_file
from flask.globals import request_ctx
from flask.logging import has_level_handler
from flask.sansio.app import App
from flask.sansio.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import ClosingIterator

from ._approvals import ApprovalKey, approval_key, decide, go_on, verdicts_in
from ._chat import ChatRequest, ChatResult
from ._cli import cli
from ._config import ConfigError, Options, Settings, resolve
from ._emit import Emitted, emitting_to
from ._errors import (
    ChatStreamError,
    MethodNotAllowed,
    RequestError,
    RequestTooLarge,
    ResumeUnavailable,
    StreamNotFound,
    StreamTruncated,
    TooManyReaders,
)
from ._health import Readiness
from ._health import body as readiness_body
from ._hooks import (
    AfterStream,
    AfterStreamHooks,
    BeforeUpstream,
    MessageMetadata,
    MessageMetadataHooks,
    run_before_upstream,
)
from ._observe import Observer, observer
from ._request.body import read_body
from ._request.chat import check_content_type, check_tool_history, choose_format, parse_chat_request
from ._request.uimessages import continued_message, is_ui_body
from ._resume.journal import Journal, MemoryJournal, Unavailable
from ._resume.replay import Replay
from ._resume.sqlite import HostJournal, HostLimit, HostStore, open_store
from ._sockets import fileno_of
from ._stream.after_leave import FinishingLimit
from ._stream.generation import Prelude
from ._stream.limits import StreamLimit, nothing
from ._stream.registry import STREAMS, new_stream_id, stream_tag
from ._stream.relay import ClientGone, Relay
from ._stream.server import check_server
from ._stream.watchdog import WATCHDOG, Hangup
from ._tools import Report, Tool, ToolRun, make_tool, tool_name
from ._upstream.client import Stopped, Upstream, check_client
from ._upstream.transport import Cancel
from ._wire.encoders import UI, Format

if TYPE_CHECKING:
    import openai
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from typing_extensions import Unpack

log = logging.getLogger("flask_chatstream")

EXTENSION_KEY = "chatstream"
HOST_FILE = "chatstream.sqlite3"
CLIENT_SCRIPT = Path(__file__).with_name("static") / "chatstream.js"
RELAY_KEY = "chatstream.relay"
BODY_KEY = "chatstream.body"
STARTED_KEY = "chatstream.started"
"""When the chat request started (``time.monotonic()``, as its body began to be read): durations count from here."""

STREAM_HEADERS = {
    # no-transform asks proxies and middleware not to compress (and so buffer) the body.
    "Cache-Control": "no-cache, no-transform",
    # nginx: pass each chunk through as it comes instead of buffering the response.
    "X-Accel-Buffering": "no",
    # browsers must not hold the first bytes back to sniff the type.
    "X-Content-Type-Options": "nosniff",
}
ALLOW = "OPTIONS, POST"
ALLOW_READ = "GET, HEAD, OPTIONS"
EXPOSED = ("X-Chat-Stream-Id", "Retry-After")
"""Headers a cross-origin page must be able to read: the stream's id (to stop and resume it), and
when to try again."""


ClientKey = Callable[[], str]

_HANDLER = logging.StreamHandler()
"""Where the log goes when the app set nothing up: stderr, in gunicorn's own line format."""
_HANDLER.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                                        "%Y-%m-%d %H:%M:%S %z"))


def remote_address() -> str:
    """The default client key. Behind a proxy, use werkzeug's ProxyFix so this is the real client."""
    return request.remote_addr or "unknown"


class ChatBlueprint(Blueprint):
    """A ``flask.Blueprint`` with the chat view, and decorators for the host app's hooks, in Flask's
    own idiom (``before_request``, ``after_request``)."""

    def __init__(self, name: str, import_name: str) -> None:
        super().__init__(name, import_name)
        self.before_upstream_funcs: list[BeforeUpstream] = []
        self.after_stream_funcs: list[AfterStream] = []
        self.message_metadata_funcs: list[MessageMetadata] = []
        self.tools: dict[str, Tool] = {}
        """The server-side tools, by name: every request offers them to the model."""
        self.may_resume_func: MayResume | None = None

    @overload
    def tool(self, f: F) -> F: ...
    @overload
    def tool(self, f: None = None, *, name: str | None = None, description: str | None = None,
             strict: bool = False, needs_approval: bool = False) -> Callable[[F], F]: ...

    def tool(self, f: F | None = None, *, name: str | None = None, description: str | None = None,
             strict: bool = False, needs_approval: bool = False) -> F | Callable[[F], F]:
        """Register a Python function the model may call, run in the worker while the stream stays open.

        Its schema comes from its signature and docstring (``name``, ``description`` and
        ``strict=True``, OpenAI's strict schema mode, override). A parameter annotated
        ``ChatRequest`` gets the request. Raise ``ToolError("...")`` to tell the model what went
        wrong; anything else it raises reaches the model only as "The tool failed."
        ``needs_approval=True`` runs it only once a person approves the call (``_approvals``); the
        approvals are signed with the app's ``SECRET_KEY``.
        """

        def register(function: F) -> F:
            tool = make_tool(function, name=name, description=description, strict=strict,
                             needs_approval=needs_approval)
            if tool.name in self.tools:
                raise ValueError(f"A tool named {tool.name!r} is already registered on this blueprint.")
            self.tools[tool.name] = tool
            return function

        return register(f) if f is not None else register

    def before_upstream(self, f: B) -> B:
        """Register a function to run before each upstream call, in the request context.

        It gets the validated ``ChatRequest`` and returns a changed one (``dataclasses.replace``), or
        ``None`` to keep it. ``abort(...)``, a ``ChatStreamError`` or any ``HTTPException`` refuses
        the request with that status and the JSON error body; nothing is sent upstream. Several run
        in registration order.
        """
        self.before_upstream_funcs.append(f)
        return f

    def may_resume(self, f: M) -> M:
        """Register the function that decides who may read a resumable stream again, in place of
        "the client that started it" (same ``client_key``). It gets the stream id and the client key
        the stream was started with, in the request context of the resume, and returns a bool."""
        self.may_resume_func = f
        return f

    def after_stream(self, f: A) -> A:
        """Register a function to run once for every stream that passed ``before_upstream``.

        It gets the ``ChatResult``, inside an app context, after the client has its last byte, or
        after the client left, or after the upstream refused. What it raises is logged and changes
        nothing for the client or for later streams.
        """
        self.after_stream_funcs.append(f)
        return f

    def message_metadata(self, f: D) -> D:
        """Register a function whose dict goes to the client with the answer, as the AI SDK's message
        metadata: ``messageMetadata`` on the ``ui`` format's ``start`` and ``finish`` parts, ``metadata``
        on the ``start`` and ``done`` events of NDJSON and SSE.

        It is called twice, in an app context: with the ``ChatRequest`` as the answer starts, and with
        the ``ChatResult`` as it is done (not after a stop or an error). Return a dict (JSON), or None
        for nothing. What it raises is logged and leaves its part out. Several merge in registration
        order.
        """
        self.message_metadata_funcs.append(f)
        return f


MayResume = Callable[[str, str], bool]
M = TypeVar("M", bound=MayResume)
B = TypeVar("B", bound=BeforeUpstream)
A = TypeVar("A", bound=AfterStream)
D = TypeVar("D", bound=MessageMetadata)
F = TypeVar("F", bound=Callable[..., Any])


class Shared(NamedTuple):
    """What a blueprint's streams share beyond this worker (or, with ``state_path=":memory:"``, within it)."""

    limit: StreamLimit
    journal: Journal | None
    """Where resumable streams are kept; None unless ``resumable``."""
    host: HostStore | None
    """Without Redis: what the workers of this machine share (stops, for every stream)."""
    check: tuple[str, Callable[[], bool]] | None
    """Whether it answers, for readiness, by name: Redis's ping, or the state file's ``ready``."""


@dataclass(frozen=True)
class _State:
    settings: Settings
    upstream: Upstream
    shared: Shared
    readers: StreamLimit
    """Readers of one resumable stream, counted where ``shared.limit`` counts."""
    client_key: ClientKey
    blueprint: ChatBlueprint
    finishing: FinishingLimit
    """Its streams that read on for clients that left."""
    observer: Observer
    """What hears of its streams: metrics, traces (``_observe``)."""
    readiness: Readiness
    scope: str
    """The blueprint's name in the app (``api``, ``admin.chat``)."""
    tag: str
    """The first characters of every stream id it makes: a stream belongs to the blueprint that made it,
    and another blueprint of the app (with other hooks, another ``may_resume``) does not know its ids."""

    @property
    def limit(self) -> StreamLimit:
        return self.shared.limit

    @property
    def journal(self) -> Journal | None:
        return self.shared.journal

    @property
    def host(self) -> HostStore | None:
        return self.shared.host

    def may_read(self, stream_id: str, owner: str) -> bool:
        decide = self.blueprint.may_resume_func
        return bool(decide(stream_id, owner)) if decide is not None else owner == self.client_key()


class _ChatResponse(Response):
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


_warned_encoding = False


class _StreamResponse(_ChatResponse):
    """A stream. Hands the server's WSGI write() to the relay, for heartbeats while it waits on the
    model, and keeps the stream a stream when the host's ``after_request`` functions wrapped it."""

    relay: Relay

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
        global _warned_encoding
        if not _warned_encoding:
            _warned_encoding = True
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


def create_blueprint(
    name: str = "chatstream",
    *,
    client: openai.OpenAI | None = None,
    client_key: ClientKey = remote_address,
    **options: Unpack[Options],
) -> ChatBlueprint:
    """Return a blueprint serving ``POST /chat``; register it with a ``url_prefix``.

    ``CHATSTREAM_*`` config keys override keyword options, which override
    ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``. ``client`` takes a ready
    ``openai.OpenAI``; its own key, base URL, HTTP settings and retry count are then used.
    ``client_key`` names the client for ``max_streams_per_client``: the remote
    address by default, or, say, ``lambda: str(current_user.id)``.
    """
    if client is not None:
        if "api_key" in options or "base_url" in options:
            raise TypeError("create_blueprint() takes client= or api_key=/base_url=, not both.")
        check_client(client)
    blueprint = ChatBlueprint(name, __name__)

    def register(state: BlueprintSetupState) -> None:
        key = f"{state.name_prefix}.{state.name}".lstrip(".")
        settings = resolve(options, state.app.config, os.environ, key)
        approval_key(state.app, blueprint.tools)  # a tool needs approval: the app has a key to sign them
        shared = _shared_state(settings, Path(state.app.instance_path), key)
        state.app.extensions.setdefault(EXTENSION_KEY, {})[key] = build_state(
            settings, client, client_key, blueprint, shared, key)
        # Every method reaches the view, which answers each with JSON and an accurate Allow header
        # (Werkzeug would answer TRACE or an unknown method with its own HTML 405).
        for endpoint in (f"{key}.chat", f"{key}.stop", f"{key}.resume", f"{key}.replay"):
            for rule in state.app.url_map.iter_rules(endpoint):
                rule.methods = None
        _init_app(state.app)

    blueprint.add_url_rule("/chat", "chat", _chat, methods=["POST", "OPTIONS"], provide_automatic_options=False)
    blueprint.add_url_rule("/chat/<stream_id>", "replay", _replay, methods=["GET"])
    blueprint.add_url_rule("/chat/<stream_id>/stop", "stop", _stop, methods=["POST"])
    blueprint.add_url_rule("/chat/<chat_id>/stream", "resume", _resume, methods=["GET"])
    blueprint.add_url_rule("/chatstream.js", "client_script", _client_script)
    blueprint.add_url_rule("/healthz", "healthz", _healthz)
    blueprint.add_url_rule("/readyz", "readyz", _readyz)
    blueprint.record(register)  # after the rules, which it adjusts
    blueprint.teardown_request(_release_unsent)
    blueprint.register_error_handler(HTTPException, _http_error)
    return blueprint


def build_state(settings: Settings, client: openai.OpenAI | None, client_key: ClientKey, blueprint: ChatBlueprint,
                shared: Shared, scope: str) -> _State:
    """A blueprint's state for an app: made at registration, and made again by ``testing.attach()``
    around the stand-in (with the same shared state), so both have the same parts."""
    upstream, observe = Upstream(settings, client), observer(settings)
    upstream.on_retry = observe.retried
    return _State(settings, upstream, shared, shared.limit.sibling(settings.max_readers_per_stream), client_key,
                  blueprint, FinishingLimit(settings.max_finishing_streams), observe,
                  Readiness(upstream.models, shared.check), scope, stream_tag(scope))


def _ours(state: _State, stream_id: str) -> None:
    """A stream id of another blueprint (or none of ours) is not found here, whatever else knows it."""
    if not stream_id.startswith(state.tag):
        raise StreamNotFound()


def _init_app(app: App) -> None:
    """What the blueprint sets up once per app: reading chat bodies first, the CLI, visible logs."""
    funcs = app.before_request_funcs.setdefault(None, [])
    if _read_chat_body not in funcs:
        funcs.insert(0, _read_chat_body)  # before any of the host's own before_request functions
    if "chatstream" not in app.cli.commands:
        app.cli.add_command(cli)
    # As Flask does for app.logger: if nothing would show the stream lines, show them.
    if not has_level_handler(log):
        log.addHandler(_HANDLER)
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)


def _read_chat_body() -> Response | None:
    """The app-level ``before_request`` that reads a chat's body under the blueprint's limits."""
    blueprint = request.blueprint
    if request.method != "POST" or blueprint is None or request.endpoint != f"{blueprint}.chat":
        return None
    state = current_app.extensions.get(EXTENSION_KEY, {}).get(blueprint)
    if state is None:
        return None
    try:
        _body(state)
    except ChatStreamError as error:
        return _error_response(error)
    return None


def _body(state: _State) -> tuple[bytes, socket.socket | None]:
    """What is checked before the body, then the body, once per request, and the client's socket."""
    found: tuple[bytes, socket.socket | None] | None = request.environ.get(BODY_KEY)
    if found is None:
        request.environ[STARTED_KEY] = time.monotonic()
        if request.args.get("format") is not None:
            choose_format(request.args.get("format"), request.accept_mimetypes)  # a bad one: 400 before the body
        check_content_type(request.mimetype)
        client = _client_socket()
        check_server(request.environ, client)
        found = (read_body(state.settings, client), client)
        request.environ[BODY_KEY] = found
    return found


def _http_error(error: HTTPException) -> Response:
    """An HTTP error raised on the blueprint's routes outside its views: by the host's or an
    extension's ``before_request``. A response the raiser built (``abort(response)``, Flask-Limiter's
    ``on_breach``) is kept as it is."""
    if error.response is not None:
        return error.response  # type: ignore[return-value]
    return _error_response(error)


def _shared_state(settings: Settings, instance: Path, scope: str) -> Shared:
    """The stream limit, the journal, the host's store, and Redis's ping when there is one: shared by this machine's workers through
    SQLite (``_resume.sqlite``), by a fleet with ``redis_url`` in Redis, or with ``state_path=":memory:"`` (or
    a folder that cannot be written) each worker's own."""
    if settings.redis_url is None:
        path = settings.state_path
        host = None if path == ":memory:" else open_store(Path(path) if path else instance / HOST_FILE, scope)
        if host is None:
            limit = StreamLimit(settings.max_streams_per_client)
            memory = MemoryJournal(settings.resume_ttl, settings.resume_max_events) if settings.resumable else None
            return Shared(limit, memory, None, None)
        kept = HostJournal(host, settings.resume_ttl, settings.resume_max_events) if settings.resumable else None
        return Shared(HostLimit(host, settings.max_streams_per_client), kept, host, ("state", host.ready))
    try:
        from ._resume.redis import FleetLimit, RedisJournal, RedisStore
    except ImportError:
        raise ConfigError("redis_url needs the redis package: pip install 'flask-chatstream[redis]'.") from None
    store = RedisStore(settings.redis_url, settings.redis_timeout, settings.slot_ttl)
    journal = RedisJournal(store, settings.resume_ttl, settings.resume_max_events, scope) if settings.resumable else None
    return Shared(FleetLimit(store, settings.max_streams_per_client), journal, None, ("redis", store.ping))


def _state() -> _State:
    try:
        return current_app.extensions[EXTENSION_KEY][request.blueprint]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError(
            "The chatstream blueprint has no state for this app. Did you register it with "
            "app.register_blueprint() on this app?"
        ) from None


def _chat() -> Response:
    try:
        return _stream()
    except _Refused as refused:
        response = _error_response(refused.error)
        response.call_on_close(refused.then)  # after_stream, once the error is out
        return response
    except (ChatStreamError, HTTPException) as error:
        return _error_response(error)
    except ClientGone:
        return json_error(499, "client_left", "The client closed the connection.")
    except Exception as error:
        # Error trackers listen to this signal; Flask only sends it for errors it handles itself.
        got_request_exception.send(current_app._get_current_object(), exception=error)  # type: ignore[attr-defined]
        log.exception("unexpected error in the chat view")
        return json_error(500, "internal_error", ChatStreamError.message)


def _error_response(error: ChatStreamError | HTTPException) -> Response:
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


class _Refused(Exception):
    """The upstream refused (or failed) before the first byte, after ``before_upstream`` passed."""

    def __init__(self, error: ChatStreamError, then: Callable[[], None]) -> None:
        self.error = error
        self.then = then


def _stream() -> Response:
    if request.method == "OPTIONS":
        return _ChatResponse(status=204, headers={"Allow": ALLOW})
    if request.method != "POST":
        raise MethodNotAllowed(allow=ALLOW)
    state = _state()
    settings = state.settings
    body, client = _body(state)
    chat = parse_chat_request(body, settings)
    fmt = choose_format(request.args.get("format"), request.accept_mimetypes, ui_body=is_ui_body(chat.body))
    owner = state.client_key()
    release = state.limit.acquire(owner)
    tools = state.blueprint.tools
    key = approval_key(current_app, tools, owner)  # approval ids are bound to the client they were asked of
    context = request_ctx.copy().copy if tools else None
    ran: list[tuple[ToolRun, str, float, float]] = []
    try:
        chat, prelude = _before_upstream(state, chat, key, context, lambda *run: ran.append(run))
    except BaseException:
        release()
        raise
    # From here on after_stream runs once, whatever happens.
    stream_id = new_stream_id(state.tag)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    watch = state.observer.stream(fmt.name, chat)
    for run in ran:
        watch.tool_ran(*run)  # the calls the request approved
    after = AfterStreamHooks(app, state.blueprint.after_stream_funcs, observe=watch.ended)
    metadata = state.blueprint.message_metadata_funcs
    started, started_at = request.environ.get(STARTED_KEY, time.monotonic()), datetime.now(timezone.utc)
    opening = Cancel()
    hangup = Hangup(fileno_of(client), lambda: opening.cancel("client_left"))
    WATCHDOG.watch(hangup)  # a gateway may hold the head until the first token: the client may leave first
    asked = time.time()
    try:
        stream = state.upstream.open(chat, opening)
    except ChatStreamError as error:
        release()
        result = ChatResult(id=stream_id, request=chat, outcome="error", error=error, started_at=started_at,
                            duration=time.monotonic() - started)
        raise _Refused(error, lambda: after(result)) from None
    except Stopped as stopped:
        release()
        log.info("chat: the client left before the model answered; its request was closed")
        after(ChatResult(id=stream_id, request=chat, outcome=stopped.reason, started_at=started_at,
                         duration=time.monotonic() - started))
        raise ClientGone() from None
    except BaseException:
        release()
        after(ChatResult(id=stream_id, request=chat, outcome="error", started_at=started_at,
                         duration=time.monotonic() - started))  # (a bug of ours: a 500 follows)
        raise
    finally:
        WATCHDOG.forget(hangup)
    recording = None
    if state.journal is not None:
        chat_id = chat.context.get("chat_id")
        recording = state.journal.begin(stream_id, owner, chat_id if isinstance(chat_id, str) else None)
    if state.host is not None:
        state.host.start()  # this worker's watcher, which takes the stops asked for on other workers
    relay = Relay(stream, fmt, settings, client=client, chat=chat, stream_id=stream_id, owner=owner,
                  on_close=release, on_end=after, tools=_offered(tools, chat), reopen=state.upstream.open,
                  recording=recording, context=context, finishing=state.finishing,
                  metadata=MessageMetadataHooks(app, metadata) if metadata else None, approval_key=key,
                  prelude=prelude, watch=watch, started=started, asked=asked)

    try:
        relay.prime(settings.first_event_wait)
    except ChatStreamError as error:
        raise _Refused(error, relay.close) from None
    except BaseException:
        relay.close()
        raise
    request.environ[RELAY_KEY] = relay  # released at teardown if the server never gets it
    # direct_passthrough hands the relay straight to the server: no Werkzeug
    # wrapper runs per chunk.
    headers = {**STREAM_HEADERS, **fmt.headers, "X-Chat-Stream-Id": stream_id}
    response = _StreamResponse(relay, content_type=fmt.mimetype, headers=headers, direct_passthrough=True)
    response.relay = relay
    return response


def _before_upstream(state: _State, chat: ChatRequest, key: ApprovalKey | None,
                     context: Callable[[], ContextManager[object]] | None, report: Report
                     ) -> tuple[ChatRequest, Prelude]:
    """All that may refuse a valid request before the model is asked: the approvals it answers (a
    forged one before the hooks), the host's hooks, the tool history, then the approved calls run.
    The request the model gets, and what the answer starts with."""
    tools, settings = state.blueprint.tools, state.settings
    if tools:
        chat.params["tools"] = [tool.definition(settings.api) for tool in tools.values()]  # hooks may change these
    emitted = Emitted()
    decided = decide(verdicts_in(chat.body), chat, tools, key)
    with emitting_to(emitted.add):
        chat = run_before_upstream(state.blueprint.before_upstream_funcs, chat)
    check_tool_history(chat)
    chat, runs = go_on(chat, decided, _offered(tools, chat), timeout=settings.tool_timeout,
                       max_output_chars=settings.max_tool_output_chars, context=context, sink=emitted.add,
                       report=report)
    return chat, Prelude(continued_message(chat.body), tuple(emitted.close()), tuple(runs))


def _offered(tools: dict[str, Tool], chat: ChatRequest) -> dict[str, Tool]:
    """The server-side tools this request offers the model (a hook may have taken some away)."""
    offered = {tool_name(d) for d in chat.params.get("tools") or ()}
    return {name: tool for name, tool in tools.items() if name in offered}


def _replay(stream_id: str) -> Response:
    """``GET <prefix>/chat/<stream_id>``: a resumable stream's events after ``?after=<seq>`` (or the
    ``Last-Event-ID`` header), then the live ones to the end, for the client that started it."""
    try:
        if request.method == "OPTIONS":
            return _ChatResponse(status=204, headers={"Allow": ALLOW_READ})
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("Use GET to read a stream again.", allow=ALLOW_READ)
        state = _state()
        fmt = choose_format(request.args.get("format"), request.accept_mimetypes)
        after = _after()
        return _replay_response(state, stream_id, after, fmt)
    except ChatStreamError as error:
        return _error_response(error)


def _resume(chat_id: str) -> Response:
    """``GET <prefix>/chat/<chat id>/stream``: where ``useChat({resume: true})`` picks up the chat's
    running answer, from its start, as the AI SDK's stream; 204 when there is none."""
    try:
        if request.method == "OPTIONS":
            return _ChatResponse(status=204, headers={"Allow": ALLOW_READ})
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("Use GET to resume a chat's stream.", allow=ALLOW_READ)
        state = _state()
        if state.journal is None:
            return _ChatResponse(status=204)
        try:
            stream_id = state.journal.active(chat_id, state.client_key())  # the chat id is the client's to pick
        except Unavailable:
            raise ResumeUnavailable() from None
        if stream_id is None:
            return _ChatResponse(status=204)
        return _replay_response(state, stream_id, 0, UI)
    except StreamNotFound:
        return _ChatResponse(status=204)  # ended (or not this client's) since it was looked up
    except ChatStreamError as error:
        return _error_response(error)


def _replay_response(state: _State, stream_id: str, after: int, fmt: Format) -> Response:
    journal = state.journal
    if journal is None:
        raise StreamNotFound("There is no such stream: streams are not kept here (resumable is off).")
    _ours(state, stream_id)
    try:
        found = journal.find(stream_id)
    except Unavailable:
        raise ResumeUnavailable() from None
    if found is None or not state.may_read(stream_id, found.owner):
        raise StreamNotFound()
    if after + 1 < found.first:
        raise StreamTruncated()
    # A reader costs what a stream costs: its stream has a cap on readers, and it counts against its
    # client's cap, but for the client that started a stream still running: its readers share that
    # stream's slot (the connection it lost may hold the slot for minutes, unnoticed, on a dead network).
    release_reader = state.readers.acquire(stream_id, TooManyReaders)
    owner = state.client_key()
    try:
        release_slot = nothing if found.live and found.owner == owner else state.limit.acquire(owner)
    except BaseException:
        release_reader()
        raise
    client = _client_socket()
    replay = Replay(journal, stream_id, after, fmt, heartbeat=state.settings.heartbeat,
                    send_timeout=state.settings.send_timeout, client=client,
                    on_close=lambda: (release_slot(), release_reader()))
    headers = {**STREAM_HEADERS, **fmt.headers, "X-Chat-Stream-Id": stream_id}
    return _ChatResponse(replay, content_type=fmt.mimetype, headers=headers, direct_passthrough=True)


def _after() -> int:
    """The last ``seq`` the client has: ``?after=``, else the ``Last-Event-ID`` header, else 0."""
    value = request.args.get("after", request.headers.get("Last-Event-ID", "0"))
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise RequestError("after (or Last-Event-ID) must be the seq of the last event received, a whole "
                           "number.", code="invalid_after")
    return int(value)


def _stop(stream_id: str) -> Response:
    """``POST <prefix>/chat/<stream_id>/stop``: the client that started a stream stops it, on any
    worker of this machine, or, for resumable streams on Redis, anywhere."""
    try:
        if request.method == "OPTIONS":
            return _ChatResponse(status=204, headers={"Allow": ALLOW})
        if request.method != "POST":
            raise MethodNotAllowed("Use POST to stop a stream.", allow=ALLOW)
        state = _state()
        _ours(state, stream_id)
        owner = state.client_key()
        if STREAMS.stop(stream_id, owner):
            return _ChatResponse(status=204)
        if state.host is not None:
            try:
                if state.host.stop(stream_id, owner):
                    return _ChatResponse(status=204)
            except Unavailable:
                raise ResumeUnavailable() from None
            raise StreamNotFound("There is no such stream open.")
        if state.journal is not None:
            try:
                found = state.journal.find(stream_id)
                if found is not None and found.live and found.owner == owner:
                    state.journal.stop(stream_id)
                    return _ChatResponse(status=204)
            except Unavailable:
                raise ResumeUnavailable() from None
        raise StreamNotFound("There is no such stream open.")
    except ChatStreamError as error:
        return _error_response(error)


def _release_unsent(_exc: BaseException | None) -> None:
    """A host ``after_request`` raised or replaced our response: the server will never close the
    relay, so stop the upstream and give back the stream slot here."""
    relay = request.environ.pop(RELAY_KEY, None)
    if relay is not None:
        log.warning("stream id=%s was never sent: an after_request function or error handler replaced the chat "
                    "response, so the model is stopped", relay.id)
        relay.close()


def _client_socket() -> socket.socket | None:
    """The client connection's socket, from gunicorn or Werkzeug's dev server."""
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    return sock if isinstance(sock, socket.socket) else None


def _healthz() -> Response:
    return json_response(200, {"status": "ok"})


def _readyz() -> Response:
    ready, checks = _state().readiness.check()
    return json_response(200 if ready else 503, readiness_body(ready, checks))


def _client_script() -> Response:
    # Revalidated with ETag/Last-Modified after an hour, so upgrades reach browsers.
    return send_file(CLIENT_SCRIPT, mimetype="text/javascript", max_age=3600, conditional=True)


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}}, headers)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """The blueprint's JSON answers (its errors, its health): never cached."""
    response = _ChatResponse(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response
