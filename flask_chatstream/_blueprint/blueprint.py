"""The Flask side: ``create_blueprint``, the ``ChatBlueprint`` it returns (the hooks' decorators, in
Flask's own idiom), and what registration sets up.

Settings are resolved, the shared state chosen and the upstream client built when the blueprint is
registered, once per app and registration name, and kept in ``app.extensions["chatstream"]``
(``state``). The views (``views``) turn their own errors into JSON responses (``responses``), and the
blueprint's error handler does the same for every HTTP error raised on its routes before the view runs
(the host's ``before_request`` functions, Flask-Login, Flask-Limiter, Flask-WTF's CSRF check). A
handler the host registered for a specific status still wins, as Flask's own lookup order says.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from flask import Blueprint, Response, request
from flask.logging import has_level_handler
from flask.sansio.app import App
from flask.sansio.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from .._approvals import approval_key
from .._cli import cli
from .._config import Options, resolve
from .._hooks import AfterStream, BeforeUpstream, MayResume, MessageMetadata, TokenBudget
from .._resume.shared import open_shared
from .._tools import Tool, make_tool
from .._upstream.client import check_client
from . import views
from .responses import error_response
from .state import EXTENSION_KEY, ClientKey, build_state

if TYPE_CHECKING:
    import openai
    from typing_extensions import Unpack

log = logging.getLogger("flask_chatstream")

_HANDLER = logging.StreamHandler()
"""Where the log goes when the app set nothing up: stderr, in gunicorn's own line format."""
_HANDLER.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                                        "%Y-%m-%d %H:%M:%S %z"))


def remote_address() -> str:
    """The default client key. Behind a proxy, use werkzeug's ProxyFix so this is the real client."""
    return request.remote_addr or "unknown"


M = TypeVar("M", bound=MayResume)
T = TypeVar("T", bound=TokenBudget)
B = TypeVar("B", bound=BeforeUpstream)
A = TypeVar("A", bound=AfterStream)
D = TypeVar("D", bound=MessageMetadata)
F = TypeVar("F", bound=Callable[..., Any])


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
        self.token_budget_func: TokenBudget | None = None

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

    def token_budget(self, f: T) -> T:
        """Register the function that gives each client its budget, in place of the ``token_budget``
        setting: plans (free, pro). It gets the ``ChatRequest`` about to be sent, in the request context
        (``flask_login.current_user`` works), after ``before_upstream``, and returns a budget string
        (``"50000/day"``, ``"2.00 USD/day"``) or None for no limit. To keep the setting for a client,
        return it (``current_app.config["CHATSTREAM_TOKEN_BUDGET"]``)."""
        self.token_budget_func = f
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
        shared = open_shared(settings, Path(state.app.instance_path), key)
        state.app.extensions.setdefault(EXTENSION_KEY, {})[key] = build_state(
            settings, client, client_key, blueprint, shared, key)
        for endpoint, view in state.app.view_functions.items():
            if endpoint.startswith(f"{key}.") and getattr(view, "every_method", False):
                for rule in state.app.url_map.iter_rules(endpoint):
                    rule.methods = None  # every method reaches the view, which answers it (views.answers)
        _init_app(state.app)

    blueprint.add_url_rule("/chat", "chat", views.chat)
    blueprint.add_url_rule("/chat/<stream_id>", "replay", views.replay)
    blueprint.add_url_rule("/chat/<stream_id>/stop", "stop", views.stop)
    blueprint.add_url_rule("/chat/<chat_id>/stream", "resume", views.resume)
    blueprint.add_url_rule("/chatstream.js", "client_script", views.client_script)
    blueprint.add_url_rule("/healthz", "healthz", views.healthz)
    blueprint.add_url_rule("/readyz", "readyz", views.readyz)
    blueprint.record(register)  # after the rules, which it adjusts
    blueprint.teardown_request(views.release_unsent)
    blueprint.register_error_handler(HTTPException, _http_error)
    return blueprint


def _init_app(app: App) -> None:
    """What the blueprint sets up once per app: reading chat bodies first, the CLI, visible logs."""
    funcs = app.before_request_funcs.setdefault(None, [])
    if views.read_chat_body not in funcs:
        funcs.insert(0, views.read_chat_body)  # before any of the host's own before_request functions
    if "chatstream" not in app.cli.commands:
        app.cli.add_command(cli)
    # As Flask does for app.logger: if nothing would show the stream lines, show them.
    if not has_level_handler(log):
        log.addHandler(_HANDLER)
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)


def _http_error(error: HTTPException) -> Response:
    """An HTTP error raised on the blueprint's routes outside its views: by the host's or an
    extension's ``before_request``. A response the raiser built (``abort(response)``, Flask-Limiter's
    ``on_breach``) is kept as it is."""
    if error.response is not None:
        return error.response  # type: ignore[return-value]
    return error_response(error)
