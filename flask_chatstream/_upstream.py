"""The model provider, through the official openai client. The only module that imports openai.

The client does what it is good at: auth, base URL, retries on the initial
request, typed errors for statuses. For the body we take the raw SSE bytes
(``with_streaming_response``) instead of the SDK's typed chunk objects, which
cost most of a naive relay's CPU.
"""

from __future__ import annotations

import importlib
import logging
import select
import socket
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import openai

from ._config import Settings
from ._errors import (
    UpstreamAuthError,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ._request import ChatRequest
from ._watchdog import unpatched

log = logging.getLogger("flask_chatstream")


def _http_module() -> Any:
    """The HTTP library under this openai release (httpx, or httpx2 in newer ones)."""
    for cls in openai.DefaultHttpxClient.__mro__:
        if not cls.__module__.startswith("openai"):
            return importlib.import_module(cls.__module__.partition(".")[0])
    raise RuntimeError("cannot find the HTTP library under openai")  # pragma: no cover


_http = _http_module()


def _unpatch_idle_connection_check() -> None:
    """Give httpcore's idle-connection check the OS's select module, when gevent patched it.

    Each time httpcore takes a connection from its pool (and again when one comes back), it asks
    every idle connection whether the server closed it, with a zero-timeout ``select.poll()``.
    gevent's patched poll turns each of those into watchers, a timer and a hub switch: about a
    third of the relay's CPU per request with a warm pool. A zero-timeout poll never blocks, so
    the original one is safe, and much cheaper.
    """
    poll = unpatched("poll")
    if poll is select.poll:
        return  # gevent has not patched select
    core = _http.__name__.replace("httpx", "httpcore")
    utils = sys.modules.get(f"{core}._utils") or importlib.import_module(f"{core}._utils")
    if getattr(utils, "select", None) is sys.modules["select"]:
        setattr(utils, "select", types.SimpleNamespace(poll=poll, select=unpatched("select"), POLLIN=select.POLLIN))


_unpatch_idle_connection_check()


class Upstream:
    """One blueprint registration's way to the model provider."""

    def __init__(self, settings: Settings, client: openai.OpenAI | None = None) -> None:
        if client is None:
            if settings.api_key is None:
                raise RuntimeError(
                    "flask_chatstream has no API key for the model provider. Did you forget to set "
                    "OPENAI_API_KEY, app.config['CHATSTREAM_API_KEY'] or create_blueprint(api_key=...)? "
                    "Servers that need no key (Ollama, vLLM) take any non-empty string. "
                    "Or pass a ready client with create_blueprint(client=...)."
                )
            client = openai.OpenAI(
                api_key=settings.api_key,
                base_url=settings.base_url,
                max_retries=settings.max_retries,
                http_client=openai.DefaultHttpxClient(
                    # A relay holds one upstream connection per open stream.
                    limits=_http.Limits(max_connections=None, max_keepalive_connections=100),
                ),
            )
        self.client = client
        self._create = client.chat.completions.with_streaming_response.create
        self._timeout = _http.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        self._settings = settings

    def open(self, request: ChatRequest) -> UpstreamStream:
        """Start the completion and return its body, or raise an ``UpstreamError``."""
        settings = self._settings
        # The body goes in extra_body, which the SDK lays over the request as it is: our messages are
        # already validated plain strings, and the SDK's recursive transform of typed params would
        # only walk them again (a third of its per-request CPU). The typed arguments stay minimal.
        body: dict[str, Any] = {"messages": request.messages, settings.max_tokens_param: request.max_tokens}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if settings.include_usage:
            body["stream_options"] = {"include_usage": True}
        manager = self._create(model=request.model, messages=[], stream=True, timeout=self._timeout,
                               extra_body=body)
        try:
            response = manager.__enter__()
        except openai.APIStatusError as exc:
            log.warning("upstream refused the stream: status=%s request_id=%s", exc.status_code, exc.request_id)
            raise _status_error(exc) from None
        except openai.APITimeoutError:
            log.warning("upstream timed out before the stream started")
            raise UpstreamTimeout() from None
        except openai.APIConnectionError:
            log.warning("upstream could not be reached")
            raise UpstreamUnavailable() from None
        except openai.OpenAIError as exc:
            log.warning("upstream failed before the stream started: %s", type(exc).__name__)
            raise UpstreamError() from None
        return UpstreamStream(response.http_response, settings.read_timeout)


_STALLED = "The model provider stopped sending in the middle of the answer."


class ClientGone(Exception):
    """The client hung up; the relay ends quietly."""


class UpstreamStream:
    """The raw bytes of one upstream body. Iterate once; always ``close``.

    The watchdog calls ``check`` and ``client_left`` from its own loop; either may stop the
    stream by shutting its socket down, which wakes a blocked read with an end-of-stream.
    """

    __slots__ = ("_response", "_socket", "_stopped", "read_timeout", "last_read", "client_fd", "on_tick",
                 "__weakref__")

    def __init__(self, response: Any, read_timeout: float) -> None:
        self._response = response
        self.read_timeout = read_timeout
        self.last_read = time.monotonic()
        self.client_fd: int | None = None
        self.on_tick: Callable[[float], None] | None = None
        self._stopped: str | None = None
        network = response.extensions.get("network_stream")
        self._socket = network.get_extra_info("socket") if network is not None else None
        if self._socket is not None:
            # The watchdog enforces the read timeout from now on, so body reads need no timer each.
            # (httpcore reads this shared dict when the body iteration starts.)
            extensions = response.request.extensions
            extensions["timeout"] = {**extensions.get("timeout", {}), "read": None}

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        # The byte stream itself, without iter_bytes' decoder and chunker layers,
        # unless the upstream compressed the body.
        encoded = response.headers.get("content-encoding", "identity") != "identity"
        clock = time.monotonic
        try:
            for data in response.iter_bytes() if encoded else response.stream:
                self.last_read = clock()
                yield data
        except _http.TimeoutException:  # only where the watchdog could not take the socket
            raise UpstreamTimeout(_STALLED) from None
        except (_http.TransportError, _http.StreamError):
            if self._stopped == "client_left":
                raise ClientGone() from None
            if self._stopped == "timeout":
                raise UpstreamTimeout(_STALLED) from None
            raise UpstreamInterrupted() from None
        if self._stopped == "client_left":
            raise ClientGone()

    def check(self, now: float) -> None:
        if self._stopped is None and now - self.last_read > self.read_timeout and self._socket is not None:
            self._stop("timeout")
        elif self.on_tick is not None:
            self.on_tick(now)

    def client_left(self) -> None:
        self._stop("client_left")

    def _stop(self, reason: str) -> None:
        if self._stopped is not None:
            return
        self._stopped = reason
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """Drop the upstream connection, which stops generation (and billing)."""
        self._response.close()


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
    for _ in Relay(stream, NDJSON):
        pass


def _status_error(exc: openai.APIStatusError) -> UpstreamError:
    status = exc.status_code
    if status in (401, 403):
        return UpstreamAuthError()
    if status == 429:
        return UpstreamRateLimited(retry_after=exc.response.headers.get("retry-after"))
    if status in (408, 504):
        return UpstreamTimeout()
    if status >= 500:
        return UpstreamUnavailable()
    return UpstreamRejected()
