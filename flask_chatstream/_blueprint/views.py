"""The blueprint's views. The chat view decides everything that can fail before the first byte: it
validates the request, runs the host's hooks, opens the upstream stream and reads ahead to the answer's
first event, so every failure up to then is a real HTTP status with a JSON body; only then does it hand
plain data to the relay.

The chat body is read first of all, by an app-level ``before_request`` function (``read_chat_body``)
that runs before the host's own, under the blueprint's size and time limits. Werkzeug caches it, so
host code that calls ``request.get_json()`` gets it too.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ContextManager, TypeVar

from flask import Response, current_app, got_request_exception, request, send_file
from flask.globals import request_ctx
from werkzeug.exceptions import HTTPException

from .._approvals import ApprovalKey, approval_key, decide, go_on, verdicts_in
from .._chat import ChatRequest, ChatResult, StopReason
from .._emit import Emitted, emitting_to
from .._errors import (
    ChatStreamError,
    RequestError,
    ResumeUnavailable,
    StreamNotFound,
    StreamTruncated,
    TooManyReaders,
    WrongMethod,
)
from .._health import body as readiness_body
from .._hooks import AfterStreamHooks, MessageMetadataHooks, run_before_upstream
from .._request.body import read_body
from .._request.agui import is_agui_body, offer_client_tools, run_of
from .._request.chat import check_content_type, check_tool_history, choose_format, offered_names, parse_chat_request
from .._request.uimessages import continued_message, is_ui_body
from .._resume.journal import Unavailable
from .._resume.replay import Replay
from .._sockets import fileno_of
from .._stream.limits import nothing
from .._stream.registry import STREAMS, new_stream_id
from .._stream.relay import ClientGone, Relay
from .._stream.server import check_server
from .._stream.spec import Prelude, StreamSpec
from .._tools import Report, Tool, ToolRun
from .._upstream.client import Stopped, UpstreamStream
from .._upstream.transport import Cancel
from .._watchdog import WATCHDOG, Hangup
from .._wire.encoders import UI, Format
from .budgets import Spending, settling, spend, unspent
from .responses import RELAY_KEY, STREAM_HEADERS, ChatResponse, StreamResponse, error_response, json_error, json_response
from .state import EXTENSION_KEY, BlueprintState, current_state

log = logging.getLogger("flask_chatstream")

CLIENT_SCRIPT = Path(__file__).parent.parent / "static" / "chatstream.js"
BODY_KEY = "chatstream.body"
STARTED_KEY = "chatstream.started"
"""When the chat request started (``time.monotonic()``, as its body began to be read): durations count from here."""

V = TypeVar("V", bound=Callable[..., Response])


def answers(*methods: str, refusal: str | None = None) -> Callable[[V], V]:
    """Declare the methods a view answers. Every method reaches it (registration sets its rules'
    methods to None): OPTIONS is a 204 with an accurate ``Allow``, any other method a JSON 405 (Werkzeug
    would answer TRACE or an unknown one with its own HTML), and our errors are the JSON error body."""
    allow = ", ".join(sorted({*methods, "OPTIONS"}))

    def declare(view: V) -> V:
        @functools.wraps(view)
        def answer(*args: Any, **kwargs: Any) -> Response:
            if request.method == "OPTIONS":
                return ChatResponse(status=204, headers={"Allow": allow})
            try:
                if request.method not in methods:
                    raise WrongMethod(refusal, allow=allow) if refusal else WrongMethod(allow=allow)
                return view(*args, **kwargs)
            except ChatStreamError as error:
                return error_response(error)

        answer.methods = methods  # type: ignore[attr-defined]  # what Flask's add_url_rule reads
        answer.provide_automatic_options = False  # type: ignore[attr-defined]
        answer.every_method = True  # type: ignore[attr-defined]
        return answer  # type: ignore[return-value]

    return declare


# -- the chat ------------------------------------------------------------------------------------


def read_chat_body() -> Response | None:
    """The app-level ``before_request`` that reads a chat's body under the blueprint's limits."""
    blueprint = request.blueprint
    if request.method != "POST" or blueprint is None or request.endpoint != f"{blueprint}.chat":
        return None
    state = current_app.extensions.get(EXTENSION_KEY, {}).get(blueprint)
    if state is None:
        return None
    try:
        chat_body(state)
    except ChatStreamError as error:
        return error_response(error)
    return None


def chat_body(state: BlueprintState) -> tuple[bytes, socket.socket | None]:
    """What is checked before the body, then the body, once per request, and the client's socket."""
    found: tuple[bytes, socket.socket | None] | None = request.environ.get(BODY_KEY)
    if found is None:
        request.environ[STARTED_KEY] = time.monotonic()
        if request.args.get("format") is not None:
            choose_format(request.args.get("format"), request.accept_mimetypes)  # a bad one: 400 before the body
        check_content_type(request.mimetype)
        client = client_socket()
        check_server(request.environ, client)
        found = (read_body(state.settings, client), client)
        request.environ[BODY_KEY] = found
    return found


class _Refused(Exception):
    """The upstream refused (or failed) before the first byte, after ``before_upstream`` passed."""

    def __init__(self, error: ChatStreamError, then: Callable[[], None]) -> None:
        self.error = error
        self.then = then


@answers("POST")
def chat() -> Response:
    """``POST <prefix>/chat``: a chat's answer, streamed in the format the client picks."""
    try:
        return _stream(current_state())
    except _Refused as refused:
        response = error_response(refused.error)
        response.call_on_close(refused.then)  # after_stream, once the error is out
        return response
    except HTTPException as error:
        return error_response(error)
    except ClientGone:
        return json_error(499, StopReason.CLIENT_LEFT, "The client closed the connection.")
    except ChatStreamError:
        raise
    except Exception as error:
        # Error trackers listen to this signal; Flask only sends it for errors it handles itself.
        got_request_exception.send(current_app._get_current_object(), exception=error)  # type: ignore[attr-defined]
        log.exception("unexpected error in the chat view")
        return json_error(500, "internal_error", ChatStreamError.message)


def _stream(state: BlueprintState) -> Response:
    body, client = chat_body(state)
    chat = parse_chat_request(body, state.settings)
    fmt = choose_format(request.args.get("format"), request.accept_mimetypes, ui_body=is_ui_body(chat.body),
                        agui_body=is_agui_body(chat.body))
    owner = state.client_key()
    release = state.limit.acquire(owner)
    try:
        return _answer(state, chat, fmt, owner, client, release)
    except BaseException:
        release()  # (once: a relay that was given it gives it back when it closes, too)
        raise


def _answer(state: BlueprintState, chat: ChatRequest, fmt: Format, owner: str, client: socket.socket | None,
            release: Callable[[], None]) -> Response:
    settings, blueprint = state.settings, state.blueprint
    key = approval_key(current_app, blueprint.tools, owner)  # approval ids are bound to the client they were asked of
    context = request_ctx.copy().copy if blueprint.tools else None
    ran: list[tuple[ToolRun, str, float, float]] = []
    chat, prelude, spending = _before_upstream(state, chat, key, context, lambda *run: ran.append(run), owner)
    with unspent(spending):
        return _go(state, chat, prelude, fmt, owner, client, (key, context, ran), release, spending)


def _go(state: BlueprintState, chat: ChatRequest, prelude: Prelude, fmt: Format, owner: str,
        client: socket.socket | None, asked_for: tuple[ApprovalKey | None, Callable[[], ContextManager[object]] | None,
                                                        list[tuple[ToolRun, str, float, float]]],
        release: Callable[[], None], spending: Spending | None) -> Response:
    settings, blueprint = state.settings, state.blueprint
    key, context, ran = asked_for
    # From here on after_stream runs once, whatever happens.
    stream_id = new_stream_id(state.tag)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    watch = state.observer.stream(fmt.name, chat)
    for run in ran:
        watch.tool_ran(*run)  # the calls the request approved
    after: Callable[[ChatResult], None] = AfterStreamHooks(app, blueprint.after_stream_funcs, observe=watch.ended)
    if spending is not None:
        after = settling(spending, after)
    started, started_at = request.environ.get(STARTED_KEY, time.monotonic()), datetime.now(timezone.utc)

    def ended(outcome: str, error: ChatStreamError | None = None) -> ChatResult:
        return ChatResult(id=stream_id, request=chat, outcome=outcome, error=error, started_at=started_at,
                          duration=time.monotonic() - started)

    asked = time.time()
    stream = _open_upstream(state, chat, client, ended, after)
    recording = None
    if state.journal is not None:
        chat_id = chat.context.get("chat_id")
        recording = state.journal.begin(stream_id, owner, chat_id if isinstance(chat_id, str) else None)
    state.shared.started()
    metadata = blueprint.message_metadata_funcs
    relay = Relay(stream, fmt, settings, StreamSpec(
        stream_id=stream_id, owner=owner, chat=chat, client=client, tools=_offered(blueprint.tools, chat),
        reopen=state.upstream.open, context=context, recording=recording, finishing=state.finishing,
        metadata=MessageMetadataHooks(app, metadata) if metadata else None, approval_key=key, prelude=prelude,
        watch=watch, on_close=release, on_end=after, started=started, asked=asked))
    try:
        relay.prime(settings.first_event_wait)
    except ChatStreamError as error:
        raise _Refused(error, relay.close) from None
    except BaseException:
        relay.close()
        raise
    request.environ[RELAY_KEY] = relay  # released at teardown if the server never gets it
    headers = {**STREAM_HEADERS, **fmt.headers, "X-Chat-Stream-Id": stream_id, **(spending.fields if spending else {})}
    return StreamResponse(relay, content_type=fmt.mimetype, headers=headers)


def _open_upstream(state: BlueprintState, chat: ChatRequest, client: socket.socket | None,
                   ended: Callable[..., ChatResult], after: Callable[[ChatResult], None]) -> UpstreamStream:
    """The upstream's stream, its head read; a client that leaves meanwhile cancels it (a gateway may
    hold the head until the first token)."""
    opening = Cancel()
    hangup = Hangup(fileno_of(client), lambda: opening.cancel(StopReason.CLIENT_LEFT))
    WATCHDOG.watch(hangup)
    try:
        return state.upstream.open(chat, opening)
    except ChatStreamError as error:
        result = ended("error", error)
        raise _Refused(error, lambda: after(result)) from None
    except Stopped as stopped:
        log.info("chat: the client left before the model answered; its request was closed")
        after(ended(stopped.reason))
        raise ClientGone() from None
    except BaseException:
        after(ended("error"))  # (a bug of ours: a 500 follows)
        raise
    finally:
        WATCHDOG.forget(hangup)


def _before_upstream(state: BlueprintState, chat: ChatRequest, key: ApprovalKey | None,
                     context: Callable[[], ContextManager[object]] | None, report: Report, owner: str
                     ) -> tuple[ChatRequest, Prelude, Spending | None]:
    """All that may refuse a valid request before the model is asked: the approvals it answers (a
    forged one before the hooks), the host's hooks, the tool history, the client's budget, then the
    approved calls run. The request the model gets, what the answer starts with, and its budget's hold."""
    tools, settings = state.blueprint.tools, state.settings
    if tools:
        chat.params["tools"] = [tool.definition(settings.api) for tool in tools.values()]  # hooks may change these
    if chat.client_tools:
        chat.params["tools"] = [*chat.params.get("tools", ()), *offer_client_tools(chat.client_tools, tools)]
    emitted = Emitted()
    decided = decide(verdicts_in(chat.body), chat, tools, key)
    with emitting_to(emitted.add):
        chat = run_before_upstream(state.blueprint.before_upstream_funcs, chat)
    check_tool_history(chat)
    spending = spend(state.blueprint.token_budget_func, settings, state.shared.ledger, owner, chat)
    with unspent(spending):
        chat, runs = go_on(chat, decided, _offered(tools, chat), timeout=settings.tool_timeout,
                           max_output_chars=settings.max_tool_output_chars, context=context, sink=emitted.add,
                           report=report)
    return chat, Prelude(continued_message(chat.body), tuple(emitted.close()), tuple(runs), run_of(chat.body)), spending


def _offered(tools: dict[str, Tool], chat: ChatRequest) -> dict[str, Tool]:
    """The server-side tools this request offers the model (a hook may have taken some away)."""
    offered = offered_names(chat)
    return {name: tool for name, tool in tools.items() if name in offered}


def release_unsent(_exc: BaseException | None) -> None:
    """A host ``after_request`` raised or replaced our response: the server will never close the
    relay, so stop the upstream and give back the stream slot here."""
    relay = request.environ.pop(RELAY_KEY, None)
    if relay is not None:
        log.warning("stream id=%s was never sent: an after_request function or error handler replaced the chat "
                    "response, so the model is stopped", relay.id)
        relay.close()


def client_socket() -> socket.socket | None:
    """The client connection's socket, from gunicorn or Werkzeug's dev server."""
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    return sock if isinstance(sock, socket.socket) else None


# -- a stream again, and its stop ----------------------------------------------------------------


@answers("GET", "HEAD", refusal="Use GET to read a stream again.")
def replay(stream_id: str) -> Response:
    """``GET <prefix>/chat/<stream_id>``: a resumable stream's events after ``?after=<seq>`` (or the
    ``Last-Event-ID`` header), then the live ones to the end, for the client that started it."""
    state = current_state()
    fmt = choose_format(request.args.get("format"), request.accept_mimetypes)
    return _replay_response(state, stream_id, _after(), fmt)


@answers("GET", "HEAD", refusal="Use GET to resume a chat's stream.")
def resume(chat_id: str) -> Response:
    """``GET <prefix>/chat/<chat id>/stream``: where ``useChat({resume: true})`` picks up the chat's
    running answer, from its start, as the AI SDK's stream; 204 when there is none."""
    state = current_state()
    if state.journal is None:
        return ChatResponse(status=204)
    try:
        stream_id = state.journal.active(chat_id, state.client_key())  # the chat id is the client's to pick
    except Unavailable:
        raise ResumeUnavailable() from None
    if stream_id is None:
        return ChatResponse(status=204)
    try:
        return _replay_response(state, stream_id, 0, UI)
    except StreamNotFound:
        return ChatResponse(status=204)  # ended (or not this client's) since it was looked up


def _replay_response(state: BlueprintState, stream_id: str, after: int, fmt: Format) -> Response:
    journal = state.journal
    if journal is None:
        raise StreamNotFound("There is no such stream: streams are not kept here (resumable is off).")
    state.check_ours(stream_id)
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
    replay = Replay(journal, stream_id, after, fmt, heartbeat=state.settings.heartbeat,
                    send_timeout=state.settings.send_timeout, client=client_socket(),
                    on_close=lambda: (release_slot(), release_reader()))
    headers = {**STREAM_HEADERS, **fmt.headers, "X-Chat-Stream-Id": stream_id}
    return ChatResponse(replay, content_type=fmt.mimetype, headers=headers, direct_passthrough=True)


def _after() -> int:
    """The last ``seq`` the client has: ``?after=``, else the ``Last-Event-ID`` header, else 0."""
    value = request.args.get("after", request.headers.get("Last-Event-ID", "0"))
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise RequestError("after (or Last-Event-ID) must be the seq of the last event received, a whole "
                           "number.", code="invalid_after")
    return int(value)


@answers("POST", refusal="Use POST to stop a stream.")
def stop(stream_id: str) -> Response:
    """``POST <prefix>/chat/<stream_id>/stop``: the client that started a stream stops it, on this
    worker, or wherever the shared state reaches (this machine's workers; with Redis, the fleet)."""
    state = current_state()
    state.check_ours(stream_id)
    owner = state.client_key()
    try:
        stopped = STREAMS.stop(stream_id, owner) or state.shared.stop(stream_id, owner)
    except Unavailable:
        raise ResumeUnavailable() from None
    if not stopped:
        raise StreamNotFound("There is no such stream open.")
    return ChatResponse(status=204)


# -- health, and the browser's client ------------------------------------------------------------


def healthz() -> Response:
    return json_response(200, {"status": "ok"})


def readyz() -> Response:
    ready, checks = current_state().readiness.check()
    return json_response(200 if ready else 503, readiness_body(ready, checks))


def client_script() -> Response:
    # Revalidated with ETag/Last-Modified after an hour, so upgrades reach browsers.
    return send_file(CLIENT_SCRIPT, mimetype="text/javascript", max_age=3600, conditional=True)
