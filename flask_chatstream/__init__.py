"""Stream OpenAI chat answers from Flask to the browser.

    app.register_blueprint(create_blueprint(), url_prefix="/api")
"""

from __future__ import annotations

__version__ = "0.1.0"
"""This release (CHANGELOG.md); the package metadata reads it from here."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._errors import RENAMED, renamed

if TYPE_CHECKING:
    from ._blueprint import ChatBlueprint, ClientKey, create_blueprint
    from ._chat import ChatRequest, ChatResult, StopReason, ToolCall
    from ._config import ConfigError, Options, Settings
    from ._emit import emit, patch_state, set_state
    from ._errors import (
        BodyTimeout,
        BudgetExceeded,
        BudgetUnavailable,
        ChatStreamError,
        FormatNotAcceptable,
        RequestError,
        RequestTooLarge,
        ResumeUnavailable,
        StreamNotFound,
        StreamTruncated,
        TooManyReaders,
        TooManyStreams,
        ToolStepsExhausted,
        UnsupportedContentType,
        UpstreamAuthError,
        UpstreamError,
        UpstreamInterrupted,
        UpstreamMalformed,
        UpstreamRateLimited,
        UpstreamRejected,
        UpstreamTimeout,
        UpstreamUnavailable,
        WrongMethod,
    )
    from ._hooks import AfterStream, BeforeUpstream, MayResume, MessageMetadata, TokenBudget
    from ._tools import ToolError, parsed_arguments
    from ._warmup import warm_up

__all__ = [
    "AfterStream",
    "BeforeUpstream",
    "BodyTimeout",
    "BudgetExceeded",
    "BudgetUnavailable",
    "ChatBlueprint",
    "ChatRequest",
    "ChatResult",
    "ChatStreamError",
    "ClientKey",
    "ConfigError",
    "FormatNotAcceptable",
    "MayResume",
    "MessageMetadata",
    "Options",
    "RequestError",
    "RequestTooLarge",
    "ResumeUnavailable",
    "Settings",
    "StopReason",
    "StreamNotFound",
    "StreamTruncated",
    "TokenBudget",
    "TooManyReaders",
    "TooManyStreams",
    "ToolCall",
    "ToolError",
    "ToolStepsExhausted",
    "UnsupportedContentType",
    "UpstreamAuthError",
    "UpstreamError",
    "UpstreamInterrupted",
    "UpstreamMalformed",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "WrongMethod",
    "create_blueprint",
    "emit",
    "parsed_arguments",
    "patch_state",
    "set_state",
    "warm_up",
]

# Where each public name lives. The names are imported when first used, not with the package: the
# gunicorn settings (``-c python:flask_chatstream.gunicorn``) import this package in the master, and
# importing openai there would import ssl before a gevent worker patches it (gevent's
# MonkeyPatchWarning at every start), and would weigh on a master that serves no request.
_HOMES = {
    "ChatBlueprint": "_blueprint", "ClientKey": "_blueprint", "create_blueprint": "_blueprint",
    "ChatRequest": "_chat", "ChatResult": "_chat", "StopReason": "_chat", "ToolCall": "_chat",
    "ConfigError": "_config", "Options": "_config", "Settings": "_config",
    "emit": "_emit", "patch_state": "_emit", "set_state": "_emit",
    "AfterStream": "_hooks", "BeforeUpstream": "_hooks", "MayResume": "_hooks", "MessageMetadata": "_hooks",
    "TokenBudget": "_hooks",
    "ToolError": "_tools", "parsed_arguments": "_tools",
    "warm_up": "_warmup",
}


def __getattr__(name: str) -> Any:
    if name in RENAMED:  # (not kept in globals: each use is warned of)
        return renamed(name)
    home = _HOMES.get(name, "_errors" if name in __all__ else None)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
