"""Settings: read once, at registration, from three places in order of precedence.

1. ``CHATSTREAM_<NAME>_*`` keys in ``app.config``, for the blueprint registered as ``<name>`` alone,
   then the shared ``CHATSTREAM_*`` keys: the deployment's settings win (Flask's extension guide);
2. keyword arguments to ``create_blueprint``: the code's own defaults;
3. the openai conventions ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` (environment).

A bad value fails at startup with a message naming where it came from. Values
from config may be strings (``app.config.from_prefixed_env`` or env files), so
numbers and booleans are parsed from text too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import click

from ._budget import Budget, Price, parse_budget, parse_prices

CONFIG_PREFIX = "CHATSTREAM_"


class Options(TypedDict, total=False):
    """The keyword arguments of ``create_blueprint``, each also a ``CHATSTREAM_*`` key."""

    api_key: str
    base_url: str | None
    api: str
    model: str
    system_prompt: str | None
    allowed_models: Sequence[str]
    max_tokens: int
    max_tokens_param: str
    max_body_bytes: int
    max_messages: int
    max_content_chars: int
    connect_timeout: float
    read_timeout: float
    max_retries: int
    allow_system_role: bool
    include_usage: bool
    heartbeat: float
    max_streams_per_client: int
    send_timeout: float
    body_timeout: float
    first_event_wait: float
    max_event_bytes: int
    max_retry_wait: float
    on_client_leave: str
    max_finishing_streams: int
    allow_image_urls: bool
    tool_timeout: float
    max_tool_steps: int
    max_tool_output_chars: int
    max_readers_per_stream: int
    relay_reasoning: bool
    metrics: bool
    tracing: bool
    adjust_httpcore: bool
    resumable: bool
    redis_url: str | None
    resume_ttl: float
    resume_grace: float
    resume_max_events: int
    redis_timeout: float
    slot_ttl: float
    state_path: str | None
    prices: Mapping[str, Mapping[str, float]] | str | None
    token_budget: str | None
    budget_fail_closed: bool


@dataclass(frozen=True)
class Settings:
    api_key: str | None = None
    base_url: str | None = None
    api: str = "chat"
    """Which API of the upstream streams the answer: ``"chat"`` (chat completions), ``"responses"``, or
    ``"auto"`` (the Responses API where the upstream serves it, else chat completions)."""
    model: str = "gpt-4o-mini"
    system_prompt: str | None = None
    allowed_models: tuple[str, ...] = ()
    max_tokens: int = 4096
    max_tokens_param: str = "max_completion_tokens"
    max_body_bytes: int = 64 * 1024
    max_messages: int = 100
    max_content_chars: int = 32_000
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    """Longest silence in the upstream's data events: comments and keep-alives do not count."""
    max_retries: int = 2
    allow_system_role: bool = False
    include_usage: bool = True
    heartbeat: float = 15.0
    """Seconds of silence after which NDJSON and SSE streams get a ping; 0 turns pings off."""
    max_streams_per_client: int = 0
    """Concurrent streams one client may hold; 0 for no limit."""
    send_timeout: float = 30.0
    """Longest a write to the client may block (it stopped reading) before the stream is cut."""
    body_timeout: float = 10.0
    """Longest the client may take to send its request body; then 408."""
    first_event_wait: float = 10.0
    """Longest the view holds the status line waiting for the answer's first event, so a failure before
    it is a real HTTP status. Past it the response starts (and heartbeats can flow); 0 starts at once."""
    max_event_bytes: int = 1024 * 1024
    """Largest single upstream SSE event; a larger one ends the stream as ``upstream_malformed``."""
    max_retry_wait: float = 5.0
    """Most seconds spent waiting between retries of one request; past it the error goes to the client."""
    on_client_leave: str = "stop"
    """``"stop"``: stop the upstream when the client leaves. ``"finish"``: read the answer to its end,
    unseen, so ``after_stream`` gets all of it (a user who reloads finds it in their history)."""
    max_finishing_streams: int = 100
    """With ``"finish"``: how many streams one worker reads on for clients that left; beyond it, stop."""
    allow_image_urls: bool = False
    """Let clients send images as remote (https:) URLs, which the provider fetches; else data: URLs only."""
    tool_timeout: float = 30.0
    """Longest one call of a server-side tool may take; past it the model gets an error for that call."""
    max_tool_steps: int = 5
    """Most model calls for one answer when the model calls server-side tools."""
    max_readers_per_stream: int = 8
    """Resumable streams: how many readers (``GET <prefix>/chat/<stream_id>``) one stream may have at once;
    each also counts against its client's ``max_streams_per_client``. Beyond either, 429."""
    max_tool_output_chars: int = 50_000
    """Longest output (as text, or as JSON text) of one tool call that goes to the model and the client;
    a longer one is cut there, with a marker that says so."""
    relay_reasoning: bool = True
    """Send a reasoning model's streamed thinking to clients (``reasoning`` events); it always reaches
    ``after_stream``."""
    metrics: bool = True
    """Count streams, tokens, errors and tool calls in Prometheus metrics, when ``prometheus_client`` is
    installed (``pip install 'flask-chatstream[metrics]'``)."""
    tracing: bool = True
    """OpenTelemetry spans and metrics in the GenAI conventions, when ``opentelemetry-api`` is installed
    (a no-op unless the host configures an SDK)."""
    adjust_httpcore: bool = False
    """With a ``client=`` under gevent: fit httpcore to gevent (fair locks for HTTP/2 connections, the
    OS's poll for the idle-connection check). It changes httpcore for the whole process, so it is
    the host's choice."""
    resumable: bool = False
    """Keep every stream's events so a client that lost its connection can read on
    (``GET <prefix>/chat/<stream_id>``): in Redis with ``redis_url``, else in this process's memory."""
    redis_url: str | None = None
    """Redis for resumable streams and fleet-wide ``max_streams_per_client``, e.g. ``redis://host:6379/0``."""
    resume_ttl: float = 600.0
    """How long a resumable stream's events are kept after its last one."""
    resume_grace: float = 30.0
    """With ``resumable``: how long the answer goes on after its client left with nobody reading it
    again; then it is stopped as without resume. 0 stops it at once."""
    resume_max_events: int = 10_000
    """Most events kept per resumable stream; a resume that needs older ones is refused (410)."""
    redis_timeout: float = 0.5
    """Longest one Redis command may take before Redis counts as down (streams go on without it)."""
    slot_ttl: float = 15.0
    """With Redis: how long a stream's ``max_streams_per_client`` slot outlives a worker that died holding it."""
    state_path: str | None = None
    """Without Redis: the SQLite file through which the workers of one machine share stops, resumable
    streams and ``max_streams_per_client``; None for ``chatstream.sqlite3`` in the app's instance folder,
    ``":memory:"`` to keep each worker to itself."""
    prices: Mapping[str, Price] = dataclasses.field(default_factory=dict)
    """USD per million tokens by model (``{"gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output":
    0.60}}``, or the path of a JSON file of that shape): ``ChatResult.cost``, the cost metric, USD budgets."""
    token_budget: Budget | None = None
    """What one client (``client_key``) may spend per window: ``"200000/day"`` tokens or ``"5.00 USD/day"``;
    counted where ``max_streams_per_client`` counts. None for no budget (``@bp.token_budget`` may set one)."""
    budget_fail_closed: bool = False
    """While the shared state cannot be asked, refuse requests that have a budget (503), rather than let
    them through uncounted (one warning)."""

    def __repr__(self) -> str:
        """Every setting, with the secrets masked: settings end up in logs and error trackers."""
        shown = ", ".join(f"{name}={value!r}" for name, value in self.masked().items())
        return f"Settings({shown})"

    def masked(self) -> dict[str, Any]:
        """The settings by name, with ``api_key`` and the credentials in ``redis_url`` and ``base_url``
        (``https://user:secret@gateway/v1``) hidden."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.api_key is not None:
            values["api_key"] = "(set)"
        for name in ("redis_url", "base_url"):
            if values[name] is not None:
                values[name] = _mask_password(values[name])
        return values

    @property
    def models(self) -> tuple[str, ...]:
        """The models a client may ask for; the default model is always one."""
        return self.allowed_models if self.model in self.allowed_models else (self.model, *self.allowed_models)


def _mask_password(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)


class ConfigError(click.ClickException, ValueError):
    """A setting has a bad value, or a needed one is missing. Raised at registration, never per request.

    It is also a ``click.ClickException``, so when Flask's command line loads the app (``flask run``,
    ``flask chatstream check``) it is one line, ``Error: <the sentence>``, instead of a traceback."""


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None or value == "" else _text(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a positive integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("a positive integer") from None
    if number <= 0 or (isinstance(value, float) and value != number):
        raise ValueError("a positive integer")
    return number


def _count_or_zero(value: Any) -> int:
    return 0 if value in (0, "0") else _positive_int(value)


def _seconds_or_zero(value: Any) -> float:
    return 0.0 if value in (0, "0", 0.0) else _seconds(value)


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a positive number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("a positive number of seconds") from None
    if not number > 0 or number == float("inf"):
        raise ValueError("a positive number of seconds")
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ValueError("true or false")


def _models(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(m, str) and m for m in value):
        raise ValueError("a list of model names (or a comma-separated string)")
    return tuple(value)


def _max_tokens_param(value: Any) -> str:
    if value not in ("max_completion_tokens", "max_tokens"):
        raise ValueError("'max_completion_tokens' or 'max_tokens'")
    return str(value)


def _api(value: Any) -> str:
    if value not in ("chat", "responses", "auto"):
        raise ValueError("'chat', 'responses' or 'auto'")
    return str(value)


def _redis_url(value: Any) -> str | None:
    url = _optional_text(value)
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a redis://, rediss:// or unix:// URL")
    return url


def _on_client_leave(value: Any) -> str:
    if value not in ("stop", "finish"):
        raise ValueError("'stop' or 'finish'")
    return str(value)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "api_key": _text,
    "base_url": _optional_text,
    "api": _api,
    "model": _text,
    "system_prompt": _optional_text,
    "allowed_models": _models,
    "max_tokens": _positive_int,
    "max_tokens_param": _max_tokens_param,
    "max_body_bytes": _positive_int,
    "max_messages": _positive_int,
    "max_content_chars": _positive_int,
    "connect_timeout": _seconds,
    "read_timeout": _seconds,
    "max_retries": _count_or_zero,
    "allow_system_role": _flag,
    "include_usage": _flag,
    "heartbeat": _seconds_or_zero,
    "max_streams_per_client": _count_or_zero,
    "send_timeout": _seconds,
    "body_timeout": _seconds,
    "first_event_wait": _seconds_or_zero,
    "max_event_bytes": _positive_int,
    "max_retry_wait": _seconds_or_zero,
    "on_client_leave": _on_client_leave,
    "max_finishing_streams": _count_or_zero,
    "allow_image_urls": _flag,
    "tool_timeout": _seconds,
    "max_tool_steps": _positive_int,
    "max_tool_output_chars": _positive_int,
    "max_readers_per_stream": _positive_int,
    "relay_reasoning": _flag,
    "metrics": _flag,
    "tracing": _flag,
    "adjust_httpcore": _flag,
    "resumable": _flag,
    "redis_url": _redis_url,
    "resume_ttl": _seconds,
    "resume_grace": _seconds_or_zero,
    "resume_max_events": _positive_int,
    "redis_timeout": _seconds,
    "slot_ttl": _seconds,
    "state_path": _optional_text,
    "prices": parse_prices,
    "token_budget": parse_budget,
    "budget_fail_closed": _flag,
}
_SECRETS = frozenset({"api_key", "redis_url"})
_ENVIRONMENT = {"api_key": "OPENAI_API_KEY", "base_url": "OPENAI_BASE_URL"}

assert set(_PARSERS) == {f.name for f in dataclasses.fields(Settings)}
assert set(_PARSERS) == set(Options.__annotations__)
# A blueprint's own key (CHATSTREAM_<NAME>_<OPTION>) can never read as another option's shared key.
assert not any(a.endswith("_" + b) for a in _PARSERS for b in _PARSERS)


def blueprint_prefix(name: str) -> str:
    """The config prefix of one registration's own keys: ``CHATSTREAM_MINI_`` for ``"mini"``
    (a nested ``"admin.chat"`` gives ``CHATSTREAM_ADMIN_CHAT_``)."""
    return CONFIG_PREFIX + re.sub(r"[^A-Za-z0-9]+", "_", name).upper() + "_"


def resolve(
    options: Mapping[str, Any], config: Mapping[str, Any], environ: Mapping[str, str], name: str = ""
) -> Settings:
    """Build the settings for the blueprint registered as ``name``, or raise ``ConfigError``."""
    unknown = set(options) - set(_PARSERS)
    if unknown:
        raise TypeError(f"create_blueprint() got unknown option(s): {', '.join(sorted(unknown))}")
    own = blueprint_prefix(name) if name else None
    values: dict[str, Any] = {}
    for option, parse in _PARSERS.items():
        key = CONFIG_PREFIX + option.upper()
        own_key = f"{own}{option.upper()}" if own else None
        if own_key is not None and own_key in config:
            source, value = f"app.config[{own_key!r}]", config[own_key]
        elif key in config:
            source, value = f"app.config[{key!r}]", config[key]
        elif option in options:
            source, value = f"create_blueprint({option}=...)", options[option]
        elif option in _ENVIRONMENT and environ.get(_ENVIRONMENT[option]):
            source, value = f"the {_ENVIRONMENT[option]} environment variable", environ[_ENVIRONMENT[option]]
        else:
            continue
        try:
            values[option] = parse(value)
        except ValueError as exc:
            shown = "(hidden)" if option in _SECRETS else repr(value)
            raise ConfigError(f"{source} must be {exc}, got {shown}.") from None
    if values.get("token_budget") is not None and values["token_budget"].usd and not values.get("prices"):
        raise ConfigError(f"token_budget {values['token_budget'].text!r} is in USD, which needs prices "
                          "(CHATSTREAM_PRICES): USD per million tokens by model.")
    return Settings(**values)
