"""Every error the relay can answer with, in one place.

Each error knows its HTTP status and a stable machine-readable ``code``. Messages
are written here, for humans, and never carry upstream text (which can quote
the API key back) or anything else from the environment.

    ChatStreamError
    ├── RequestError                 400  invalid_request, invalid_json, invalid_body, ...
    │   ├── UnsupportedContentType   415  unsupported_media_type
    │   ├── RequestTooLarge          413  request_too_large
    │   ├── BodyTimeout              408  request_timeout
    │   ├── FormatNotAcceptable      406  not_acceptable
    │   ├── WrongMethod              405  method_not_allowed
    │   ├── TooManyStreams           429  too_many_streams
    │   ├── BudgetExceeded           429  budget_exceeded
    │   ├── StreamNotFound           404  stream_not_found
    │   └── StreamTruncated          410  stream_truncated
    ├── ResumeUnavailable            503  resume_unavailable
    ├── BudgetUnavailable            503  budget_unavailable
    ├── StreamEnded                       stopped, client_left, client_stalled, stream_lost (replays)
    └── UpstreamError                502  upstream_error
        ├── UpstreamAuthError        502  upstream_auth
        ├── UpstreamRejected         502  upstream_rejected, tool_calls_need_events
        ├── UpstreamRateLimited      429  rate_limited
        ├── UpstreamUnavailable      502  upstream_unavailable
        ├── UpstreamTimeout          504  upstream_timeout
        ├── UpstreamMalformed        502  upstream_malformed
        ├── UpstreamInterrupted      502  upstream_interrupted
        └── ToolStepsExhausted       502  max_tool_steps

The codes are stable. Four errors were renamed after 0.1.0, since their old names were Werkzeug's own
(``werkzeug.exceptions.MethodNotAllowed`` and the rest, which hooks may raise beside ours): the old
names still work for one release, with a ``DeprecationWarning`` (``RENAMED``).

``StreamAborted`` is not part of the tree: it is how a text/plain stream is cut
after its first byte (see ``_stream.relay``).
"""

from __future__ import annotations

import errno
import warnings
from typing import Any, TypedDict


class ErrorBody(TypedDict):
    """An error as clients get it: in the JSON body of an HTTP error, and in an ``error`` event."""

    code: str
    message: str


class ChatStreamError(Exception):
    """Base class. ``status`` and ``code`` go into the JSON error body."""

    status: int = 500
    code: str = "internal_error"
    message: str = "The chat relay failed."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        super().__init__(self.message)

    def to_dict(self) -> ErrorBody:
        return {"code": self.code, "message": self.message}

    def headers(self) -> dict[str, str]:
        return {}


class RequestError(ChatStreamError):
    """The client sent something the endpoint will not accept."""

    status = 400
    code = "invalid_request"
    message = "The request is not valid."


class UnsupportedContentType(RequestError):
    status = 415
    code = "unsupported_media_type"
    message = "Send the request body as JSON with 'Content-Type: application/json'."


class RequestTooLarge(RequestError):
    status = 413
    code = "request_too_large"
    message = "The request body is too large."


class BodyTimeout(RequestError):
    status = 408
    code = "request_timeout"
    message = "The request body did not arrive in time."

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}  # what is left of the body is not worth reading


class FormatNotAcceptable(RequestError):
    status = 406
    code = "not_acceptable"
    message = (
        "None of the Accept header's types can be served. Accept one of text/plain, "
        "application/x-ndjson or text/event-stream, or pass ?format=text|ndjson|sse."
    )


class WrongMethod(RequestError):
    status = 405
    code = "method_not_allowed"
    message = "Use POST to start a chat stream."

    def __init__(self, message: str | None = None, *, allow: str = "OPTIONS, POST") -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow}


class TooManyStreams(RequestError):
    status = 429
    code = "too_many_streams"
    message = "This client already has as many answers streaming as it may. Wait for one to finish."


class BudgetExceeded(RequestError):
    """The client has spent its ``token_budget`` for the window: refused before the model is asked."""

    status = 429
    code = "budget_exceeded"
    message = "This client has used up its budget for now."

    def __init__(self, message: str | None = None, *, retry_after: int = 1, fields: dict[str, str] | None = None
                 ) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        """Whole seconds until the window lets it in again."""
        self.fields = fields or {}
        """The ``RateLimit`` and ``RateLimit-Policy`` fields."""

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after), **self.fields}


class TooManyReaders(TooManyStreams):
    code = "too_many_readers"
    message = "This stream already has as many readers as it may. Close one, or wait for the stream to end."


class StreamNotFound(RequestError):
    status = 404
    code = "stream_not_found"
    message = "There is no such stream, or it has expired."


class StreamTruncated(RequestError):
    status = 410
    code = "stream_truncated"
    message = "The stream's early events are no longer kept: it can only be read from a later event."


class BudgetUnavailable(ChatStreamError):
    """With ``budget_fail_closed``: the shared state that counts budgets cannot be asked."""

    status = 503
    code = "budget_unavailable"
    message = "Budgets cannot be checked right now. Try again later."


class ResumeUnavailable(ChatStreamError):
    """The store of resumable streams (Redis) cannot be reached: live streams go on without it."""

    status = 503
    code = "resume_unavailable"
    message = "Streams cannot be resumed right now. Try again later."


class StreamEnded(ChatStreamError):
    """How a replay ends when the stream ended without an answer or an error of its own: it was
    stopped, or its client left and nobody came back for it in time. Never an HTTP status."""

    MESSAGES = {
        "stopped": "The stream was stopped.",
        "client_left": "The stream was stopped: its client left and nobody came back for it in time.",
        "client_stalled": "The stream was stopped: its client stopped reading.",
        "stream_lost": "The server running the stream stopped before the answer was complete.",
    }

    def __init__(self, reason: str) -> None:
        super().__init__(self.MESSAGES.get(reason, "The stream ended early."), code=reason)


class UpstreamError(ChatStreamError):
    """The model provider failed or could not be reached."""

    status = 502
    code = "upstream_error"
    message = "The model provider returned an error."


class UpstreamAuthError(UpstreamError):
    code = "upstream_auth"
    message = "The server's credentials for the model provider were rejected."


class UpstreamRejected(UpstreamError):
    code = "upstream_rejected"
    message = "The model provider rejected the request."


class UpstreamRateLimited(UpstreamError):
    status = 429
    code = "rate_limited"
    message = "The model provider is rate limiting requests. Try again later."

    def __init__(self, message: str | None = None, *, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """An integer number of seconds or an HTTP date, already checked; anything else is dropped."""

    def headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after} if self.retry_after else {}


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"
    message = "The model provider is unavailable."


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    message = "The model provider did not answer in time."


class UpstreamMalformed(UpstreamError):
    code = "upstream_malformed"
    message = "The model provider sent data that could not be read."


class UpstreamInterrupted(UpstreamError):
    code = "upstream_interrupted"
    message = "The model provider's stream ended before the answer was complete."


class StreamAborted(ConnectionAbortedError):
    """Raised from a text/plain body to cut the connection without its terminator.

    It is an ``OSError`` with ``EPIPE`` on purpose: gunicorn and the Werkzeug dev
    server treat that as a dropped connection, close the socket quietly and never
    write the final ``0\\r\\n\\r\\n`` chunk, so the client's reader fails instead of
    taking a truncated answer for a whole one.
    """

    def __init__(self, reason: ChatStreamError | str) -> None:
        self.code = reason if isinstance(reason, str) else reason.code
        super().__init__(errno.EPIPE, f"stream aborted: {self.code}")
        self.reason = reason


class ToolStepsExhausted(UpstreamError):
    code = "max_tool_steps"
    message = "The model kept calling tools past the limit of model calls for one answer."


RENAMED = {
    "MethodNotAllowed": "WrongMethod",
    "NotAcceptable": "FormatNotAcceptable",
    "RequestTimeout": "BodyTimeout",
    "UnsupportedMediaType": "UnsupportedContentType",
}
"""Old names (Werkzeug's own) of four errors, and their new ones: the old work until 0.2, with a warning."""


def renamed(name: str) -> Any:
    """The error an old name stands for, with a ``DeprecationWarning`` said where it was used."""
    new = RENAMED[name]
    warnings.warn(f"flask_chatstream.{name} is renamed {new} (it read like werkzeug.exceptions.{name}); the old "
                  "name goes in 0.2.", DeprecationWarning, stacklevel=3)
    return globals()[new]


def __getattr__(name: str) -> Any:
    if name in RENAMED:
        return renamed(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
