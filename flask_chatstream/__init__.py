"""Stream OpenAI chat answers from Flask to the browser.

    app.register_blueprint(create_blueprint(), url_prefix="/api")
"""

from __future__ import annotations

__version__ = "0.1.0"
"""This release (CHANGELOG.md); the package metadata reads it from here."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._blueprint import ChatBlueprint, create_blueprint
    from ._chat import ChatRequest, ChatResult, ToolCall
    from ._config import ConfigError, Options, Settings
    from ._emit import emit
    from ._errors import (
        ChatStreamError,
        MethodNotAllowed,
        NotAcceptable,
        RequestError,
        RequestTimeout,
        RequestTooLarge,
        ResumeUnavailable,
        StreamNotFound,
        StreamTruncated,
        TooManyReaders,
        TooManyStreams,
        UnsupportedMediaType,
        UpstreamAuthError,
        UpstreamError,
        UpstreamInterrupted,
        UpstreamMalformed,
        UpstreamRateLimited,
        UpstreamRejected,
        UpstreamTimeout,
        UpstreamUnavailable,
    )
    from ._tools import ToolError, parsed_arguments
    from ._warmup import warm_up

__all__ = [
    "ChatBlueprint",
    "ChatRequest",
    "ChatResult",
    "ChatStreamError",
    "ConfigError",
    "MethodNotAllowed",
    "NotAcceptable",
    "Options",
    "RequestError",
    "RequestTimeout",
    "RequestTooLarge",
    "ResumeUnavailable",
    "Settings",
    "StreamNotFound",
    "StreamTruncated",
    "TooManyReaders",
    "TooManyStreams",
    "ToolCall",
    "ToolError",
    "UnsupportedMediaType",
    "UpstreamAuthError",
    "UpstreamError",
    "UpstreamInterrupted",
    "UpstreamMalformed",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "create_blueprint",
    "emit",
    "parsed_arguments",
    "warm_up",
]

# Where each public name lives. The names are imported when first used, not with the package: the
# gunicorn settings (``-c python:flask_chatstream.gunicorn``) import this package in the master, and
# importing openai there would import ssl before a gevent worker patches it (gevent's
# MonkeyPatchWarning at every start), and would weigh on a master that serves no request.
_HOMES = {
    "ChatBlueprint": "_blueprint", "create_blueprint": "_blueprint",
    "ChatRequest": "_chat", "ChatResult": "_chat", "ToolCall": "_chat",
    "ConfigError": "_config", "Options": "_config", "Settings": "_config",
    "emit": "_emit",
    "ToolError": "_tools", "parsed_arguments": "_tools",
    "warm_up": "_warmup",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name, "_errors" if name in __all__ else None)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
