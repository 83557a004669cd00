"""The model provider, through the official openai client. The only module that imports openai.

The client does what it is good at: auth, base URL, headers, typed errors for statuses. Under the
default client sits ``_transport.ChatTransport``, which owns one connection per stream. For the
body we take the raw SSE bytes instead of the SDK's typed chunk objects, which cost most of a naive
relay's CPU. Retries are ours, so their total wait can be capped (a client holding a stream slot
should not wait 14 s for a 429).
"""

from __future__ import annotations

import email.utils
import importlib
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import openai

from . import _gevent, _transport
from ._config import Settings
from ._errors import (
    ChatStreamError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ._hooks import ChatRequest

log = logging.getLogger("flask_chatstream")


def _http_module() -> Any:
    """The HTTP library under this openai release (httpx, or httpx2 in newer ones)."""
    for cls in openai.DefaultHttpxClient.__mro__:
        if not cls.__module__.startswith("openai"):
            return importlib.import_module(cls.__module__.partition(".")[0])
    raise RuntimeError("cannot find the HTTP library under openai")  # pragma: no cover


_http = _http_module()

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0


class Upstream:
    """One blueprint registration's way to the model provider."""

    def __init__(self, settings: Settings, client: openai.OpenAI | None = None) -> None:
        self._settings = settings
        self.custom_client = client is not None
        if client is None:
            if settings.api_key is None:
                raise RuntimeError(
                    "flask_chatstream has no API key for the model provider. Did you forget to set "
                    "OPENAI_API_KEY, app.config['CHATSTREAM_API_KEY'] or create_blueprint(api_key=...)? "
                    "Servers that need no key (Ollama, vLLM) take any non-empty string. "
                    "Or pass a ready client with create_blueprint(client=...)."
                )
            if _transport.HTTP_LIBRARY == _http.__name__:
                http_client = openai.DefaultHttpxClient(transport=_transport.ChatTransport())
            else:  # pragma: no cover - an openai release on another HTTP library than ours
                http_client = openai.DefaultHttpxClient(
                    limits=_http.Limits(max_connections=None, max_keepalive_connections=100))
            client = openai.OpenAI(api_key=settings.api_key, base_url=settings.base_url, max_retries=0,
                                   http_client=http_client)
            self.max_retries = settings.max_retries
        else:
            self.max_retries = client.max_retries
        self.client = client
        # Retries are ours (see open), so the SDK's own are off.
        self._create = client.with_options(max_retries=0).chat.completions.with_streaming_response.create
        self._timeout = _http.Timeout(settings.read_timeout, connect=settings.connect_timeout)

    def open(self, request: ChatRequest) -> UpstreamStream:
        """Start the completion and return its body, or raise an ``UpstreamError``."""
        if self.custom_client:
            _gevent.adjust_httpcore(_http)
        settings = self._settings
        # The body goes in extra_body, which the SDK lays over the request as it is: our messages are
        # already validated plain data, and the SDK's recursive transform of typed params would only
        # walk them again. The typed arguments stay minimal.
        body: dict[str, Any] = {**request.params, "messages": request.messages,
                                settings.max_tokens_param: request.max_tokens}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if settings.include_usage:
            body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
        waited = 0.0
        attempt = 0
        while True:
            try:
                response = self._create(model=request.model, messages=[], stream=True, timeout=self._timeout,
                                        extra_body=body).__enter__()
                break
            except openai.OpenAIError as exc:
                error, retry, wait = _failure(exc, attempt)
            if not retry or attempt >= self.max_retries:
                raise error from None
            if waited + wait > settings.max_retry_wait:
                log.warning("upstream: not retrying %s: waiting %.1fs more would pass max_retry_wait (%.1fs)",
                            error.code, wait, settings.max_retry_wait)
                raise error from None
            attempt += 1
            log.info("upstream: %s, retry %d of %d in %.2fs", error.code, attempt, self.max_retries, wait)
            time.sleep(wait)
            waited += wait
        http_response = response.http_response
        mimetype = http_response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if mimetype != "text/event-stream":
            http_response.close()
            log.warning("upstream answered 200 with %r instead of an event stream", mimetype[:60])
            raise UpstreamMalformed("The model provider did not answer with an event stream.")
        return UpstreamStream(http_response)


def _failure(exc: openai.OpenAIError, attempt: int) -> tuple[UpstreamError, bool, float]:
    """What an SDK error means for the client, whether to retry it, and after how long."""
    backoff = min(INITIAL_RETRY_DELAY * 2.0**attempt, MAX_RETRY_DELAY) * (1 - 0.25 * random.random())
    if isinstance(exc, openai.APIStatusError):
        status, headers = exc.status_code, exc.response.headers
        log.warning("upstream refused the stream: status=%s request_id=%s", status, exc.request_id)
        should = headers.get("x-should-retry")
        retry = should == "true" or (should != "false" and (status in (408, 409, 429) or status >= 500))
        wait = retry_after_seconds(headers)
        return _status_error(exc), retry, backoff if wait is None else wait
    if isinstance(exc, openai.APITimeoutError):
        log.warning("upstream timed out before the stream started")
        return UpstreamTimeout(), True, backoff
    if isinstance(exc, openai.APIConnectionError):
        log.warning("upstream could not be reached")
        return UpstreamUnavailable(), True, backoff
    log.warning("upstream failed before the stream started: %s", type(exc).__name__)
    return UpstreamError(), False, backoff


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if sane."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
            if 0 <= value < 3600:
                return value
        except ValueError:
            pass
    checked = checked_retry_after(headers.get("retry-after"))
    if checked is None:
        return None
    if checked.isdigit():
        return float(checked)
    date = email.utils.parsedate_to_datetime(checked)
    return max(0.0, date.timestamp() - time.time())


def checked_retry_after(value: str | None) -> str | None:
    """``Retry-After`` as it may be passed on: a whole number of seconds or an HTTP date, else None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit() and value.isascii() and len(value) <= 9:
        return str(int(value))
    try:
        date = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if date is None or date.tzinfo is None:
        return None
    return email.utils.format_datetime(date, usegmt=True)


class Stopped(Exception):
    """The stream was stopped on purpose (``UpstreamStream.stop``); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamStream:
    """The raw bytes of one upstream body, and a way to stop it from the watchdog. Iterate once;
    always ``close``.

    ``stop`` wakes a blocked read by shutting the socket down, but only a socket this stream owns
    alone: the default transport's, or an HTTP/1.1 connection of a custom client. On a connection
    shared with other requests (a custom client speaking HTTP/2) it only marks the stream, which
    ends at its next read; shutting the socket would cut every stream on it.
    """

    __slots__ = ("_response", "_body", "_socket", "stopped", "__weakref__")

    def __init__(self, response: Any) -> None:
        self._response = response
        self.stopped: str | None = None
        body = response.extensions.get("chatstream_body")
        if isinstance(body, _transport.Body):
            body.unbounded()  # the watchdog enforces the read timeout from now on
            self._body: Any = body
            self._socket: Any = body.sock
            return
        self._body = None
        self._socket = None
        network = response.extensions.get("network_stream")
        if network is not None and response.extensions.get("http_version", b"HTTP/1.1") == b"HTTP/1.1":
            self._socket = network.get_extra_info("socket")

    @property
    def owns_socket(self) -> bool:
        return self._socket is not None

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        if self._body is not None:
            source: Any = self._body
        elif response.headers.get("content-encoding", "identity") != "identity":
            source = response.iter_bytes()
        else:
            source = response.stream  # the byte stream itself, without iter_bytes' decoder layers
        try:
            for data in source:
                if self.stopped is not None:
                    raise Stopped(self.stopped)
                yield data
        except (_http.TransportError, _http.StreamError, OSError, ValueError):
            if self.stopped is not None:
                raise Stopped(self.stopped) from None
            raise
        if self.stopped is not None:
            raise Stopped(self.stopped)

    def stop(self, reason: str) -> None:
        """Stop the stream from another greenlet or thread; its reader ends with ``Stopped``."""
        if self.stopped is not None and reason != "stopped":
            return
        self.stopped = reason
        if self._socket is not None:
            _transport.shutdown(self._socket)

    def finish(self, allowance: int, wait: float) -> None:
        """The answer is complete: read the rest of the body (at most ``allowance`` bytes, within
        ``wait`` seconds) so the connection can be reused, then let it go."""
        if self._body is not None and self.stopped is None:
            self._body.finish(allowance, wait)
        self.close()

    def close(self) -> None:
        """Drop or recycle the upstream connection; an unfinished body stops generation (and billing)."""
        self._response.close()


def interrupted(error: BaseException) -> ChatStreamError:
    """What a failed upstream read means for the client."""
    if isinstance(error, _http.TimeoutException):
        return UpstreamTimeout(STALLED)
    return UpstreamInterrupted()


STALLED = "The model provider stopped sending in the middle of the answer."


_WARM_UP_BODY = (
    b'data: {"id":"warm-up","object":"chat.completion.chunk","created":0,"model":"warm-up",'
    b'"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


def warm_up() -> None:
    """Run one fake completion through the SDK's request path, in memory, with no network.

    The first request after a worker starts otherwise pays for lazy imports and the SDK's
    first-use caches. gunicorn.conf.py calls this in ``post_worker_init``.
    """
    from ._formats import NDJSON
    from ._relay import Relay  # here, not at import: _relay imports this module

    def answer(request: Any) -> Any:
        return _http.Response(200, headers={"content-type": "text/event-stream"}, content=_WARM_UP_BODY)

    client = openai.OpenAI(api_key="warm-up", base_url="http://warm-up.invalid/v1", max_retries=0,
                           http_client=_http.Client(transport=_http.MockTransport(answer)))
    upstream = Upstream(Settings(), client)
    stream = upstream.open(ChatRequest(messages=[{"role": "user", "content": "hi"}], model="warm-up", max_tokens=1))
    for _ in Relay(stream, NDJSON, Settings()):
        pass


def _status_error(exc: openai.APIStatusError) -> UpstreamError:
    status = exc.status_code
    if status in (401, 403):
        return UpstreamAuthError()
    if status == 429:
        return UpstreamRateLimited(retry_after=checked_retry_after(exc.response.headers.get("retry-after")))
    if status in (408, 504):
        return UpstreamTimeout()
    if status >= 500:
        return UpstreamUnavailable()
    return UpstreamRejected()
