"""Stream OpenAI chat answers from Flask to the browser.

    app.register_blueprint(create_blueprint(), url_prefix="/api")
"""

from __future__ import annotations

__version__ = "0.1.0"
"""This release (CHANGELOG.md); the package metadata reads it from here."""

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
