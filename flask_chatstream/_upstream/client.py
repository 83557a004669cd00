"""The model provider, through the official openai client. The only module that imports openai.

The client does what it is good at: auth, base URL, headers, typed errors for statuses. Under the
default client sits ``transport.ChatTransport``, which owns one connection per stream. For the
body we take the raw SSE bytes instead of the SDK's typed chunk objects, which cost most of a naive
relay's CPU. Retries are ours, so their total wait can be capped (a client holding a stream slot
should not wait 14 s for a 429).

Proxies come from the environment as httpx's ``trust_env`` takes them (``HTTP_PROXY``,
``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, credentials in the proxy URL): the default client
mounts httpx's own proxy transports for them, and only what no proxy serves goes through ours.

One job, and over 400 lines because every way a provider refuses or breaks off is mapped here: the model call through openai, from its request to its body's bytes.
"""

from __future__ import annotations

import email.utils
import importlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import orjson

from .. import _gevent
from .._chat import ChatRequest, StopReason
from .._config import ConfigError, Settings
from .._errors import (
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
from .._sockets import shutdown
from . import transport as _transport
from .apis import API, CHAT, RESPONSES
from .direct import Direct
from .transport import Cancel, Cancelled

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


def check_client(client: object) -> None:
    """Refuse, at startup, a ``client=`` the relay cannot drive, with what to pass instead."""
    if isinstance(client, openai.AsyncOpenAI):
        raise TypeError(
            "create_blueprint(client=...) takes a synchronous openai.OpenAI (or openai.AzureOpenAI), not "
            f"{type(client).__name__}: Flask views and gevent workers stream with blocking calls, which "
            "gevent makes cooperative. Build the same client with openai.OpenAI(...) instead."
        )
    if not isinstance(client, openai.OpenAI):
        raise TypeError(f"create_blueprint(client=...) takes an openai.OpenAI, not {type(client).__name__}.")


class Upstream:
    """One blueprint registration's way to the model provider."""

    def __init__(self, settings: Settings, client: openai.OpenAI | None = None) -> None:
        self._settings = settings
        self.custom_client = client is not None
        self._timeout = _http.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        if client is not None:
            self._timeout = _shorter(self._timeout, client.timeout)  # the client's own limits hold too
        self._api: API | None = {"chat": CHAT, "responses": RESPONSES}.get(settings.api)
        """The API the upstream streams with; None until ``api="auto"`` has found out."""
        self._directs: dict[str, Direct | None] = {}
        if client is None:
            if settings.api_key is None:
                raise ConfigError(
                    "flask_chatstream has no API key for the model provider. Did you forget to set "
                    "OPENAI_API_KEY, app.config['CHATSTREAM_API_KEY'] or create_blueprint(api_key=...)? "
                    "Servers that need no key (Ollama, vLLM) take any non-empty string. "
                    "Or pass a ready client with create_blueprint(client=...)."
                )
            if _transport.HTTP_LIBRARY == _http.__name__:
                transport = _transport.ChatTransport()
                http_client = openai.DefaultHttpxClient(transport=transport, mounts=_environment_proxies())
            else:  # pragma: no cover - an openai release on another HTTP library than ours
                transport = None
                http_client = openai.DefaultHttpxClient(
                    limits=_http.Limits(max_connections=None, max_keepalive_connections=100))
            client = openai.OpenAI(api_key=settings.api_key, base_url=settings.base_url, max_retries=0,
                                   http_client=http_client)
            self.max_retries = settings.max_retries
            if transport is not None:
                self._directs = {api.name: _direct(client, http_client, transport, self._timeout, api)
                                 for api in ([self._api] if self._api is not None else [RESPONSES, CHAT])}
        else:
            self.max_retries = client.max_retries
        self.client = client
        self.on_retry: Callable[[], None] | None = None
        """Told of each retry (the observer's ``retried``)."""
        # Retries are ours (see open), so the SDK's own are off.
        sdk = client.with_options(max_retries=0)
        self._creates: dict[str, Any] = {"chat": sdk.chat.completions.with_streaming_response.create,
                                         "responses": sdk.responses.with_streaming_response.create}

    def open(self, request: ChatRequest, cancel: Cancel | None = None) -> UpstreamStream:
        """Start the answer and return its body, or raise an ``UpstreamError``; ``Stopped`` when
        ``cancel`` was used (the client left before the upstream's head).

        With ``api="auto"`` the first request tries the Responses API, and an upstream that answers
        404, 405 or 501 is asked with chat completions instead, from then on."""
        if self.custom_client and self._settings.adjust_httpcore:
            _gevent.adjust_httpcore(_http)
        api = self._api or RESPONSES
        try:
            stream = self._open(api, request, cancel, probing=self._api is None)
        except _NoSuchAPI:
            log.info("upstream: no Responses API there; chat completions from now on")
            self._api = api = CHAT  # remembered, whatever this first chat completion brings
            stream = self._open(api, request, cancel, probing=False)
        self._api = api
        return stream

    def _open(self, api: API, request: ChatRequest, cancel: Cancel | None, *, probing: bool) -> UpstreamStream:
        """One API's attempts, with our retries. ``probing`` (``api="auto"``, not yet known): a 404, 405
        or 501 raises ``_NoSuchAPI`` instead of an error."""
        settings = self._settings
        body = api.body(request, settings)
        direct = self._directs.get(api.name)
        payload = orjson.dumps({"model": request.model, "stream": True, **body}) if direct is not None else b""

        def send(attempt: int) -> UpstreamStream:
            if direct is not None:
                return _send_direct(direct, payload, attempt, cancel)
            return self._send_sdk(api, request.model, body, cancel)

        waited = 0.0
        attempt = 0
        while True:
            try:
                stream = send(attempt)
                stream.api = api
                return stream
            except _Failed as failed:
                error, retry, wait = failed.error, failed.retry, failed.wait
                if probing and failed.status in (404, 405, 501):
                    raise _NoSuchAPI() from None
            except Cancelled as cancelled:
                raise Stopped(cancelled.reason) from None
            if cancel is not None and cancel.reason is not None:
                raise Stopped(cancel.reason)
            if not retry or attempt >= self.max_retries:
                raise error from None
            if waited + wait > settings.max_retry_wait:
                log.warning("upstream: not retrying %s: waiting %.1fs more would pass max_retry_wait (%.1fs)",
                            error.code, wait, settings.max_retry_wait)
                raise error from None
            attempt += 1
            log.info("upstream: %s, retry %d of %d in %.2fs", error.code, attempt, self.max_retries, wait)
            if self.on_retry is not None:
                self.on_retry()
            _sleep(wait, cancel)
            waited += wait

    def models(self, timeout: float | None = None) -> list[str]:
        """The model ids the upstream lists (``GET /models``): a cheap proof that it is reachable and
        takes the key. Raises the ``UpstreamError`` a chat would get."""
        try:
            page = self.client.with_options(max_retries=0, timeout=timeout or self._timeout).models.list()
        except openai.OpenAIError as exc:
            raise _sdk_failure(exc).error from None
        return [model.id for model in page.data]

    def _send_sdk(self, api: API, model: str, body: dict[str, Any], cancel: Cancel | None) -> UpstreamStream:
        """Through the SDK, for a client passed with ``client=``: its own transport, auth and headers.
        The body goes in extra_body, which the SDK lays over the request as it is: our messages are
        already validated plain data, and the SDK's recursive transform of typed params would only
        walk them again."""
        try:
            with _gevent.interruptible(cancel):  # httpx's socket is out of reach until the head is in
                empty: dict[str, Any] = {"messages": []} if api is CHAT else {"input": []}
                response = self._creates[api.name](model=model, stream=True, timeout=self._timeout, extra_body=body,
                                                   **empty).__enter__()
        except openai.OpenAIError as exc:
            raise _sdk_failure(exc) from None
        except _http.HTTPError:  # the SDK reading a refusal's body, cut (a proxy that resets)
            raise _unreachable(_backoff(0)) from None
        http_response = response.http_response
        _check_event_stream(http_response.headers.get("content-type", ""), http_response.close)
        return UpstreamStream(http_response)


class _Failed(Exception):
    """One attempt failed: what to tell the client, whether to try again, and after how long (and the
    upstream's status, if it answered with one)."""

    def __init__(self, error: UpstreamError, retry: bool, wait: float, status: int | None = None) -> None:
        self.error, self.retry, self.wait, self.status = error, retry, wait, status


class _NoSuchAPI(Exception):
    """``api="auto"``: the upstream has no Responses API (404, 405 or 501)."""


def _direct(client: openai.OpenAI, http_client: Any, transport: _transport.ChatTransport,
            timeout: Any, api: API) -> Direct | None:
    """The request the openai client sends for a stream of ``api``, taken once, to send again with other bodies.
    None where a proxy from the environment applies: httpx's own proxy transport handles those."""
    captured: list[Any] = []

    def answer(request: Any) -> Any:
        captured.append(request)
        return _http.Response(200, headers={"content-type": "text/event-stream"}, content=b"data: [DONE]\n\n")

    probe = client.copy(http_client=_http.Client(transport=_http.MockTransport(answer)))
    opened: Any
    if api is CHAT:
        opened = probe.chat.completions.with_streaming_response.create(model="-", messages=[], stream=True,
                                                                       timeout=timeout)
    else:
        opened = probe.responses.with_streaming_response.create(model="-", input=[], stream=True, timeout=timeout)
    with opened:
        pass
    [request] = captured
    url = request.url
    if url.scheme not in ("http", "https") or http_client._transport_for_url(url) is not transport:
        return None
    origin = (url.raw_scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
    timeouts = request.extensions.get("timeout", {})
    return Direct(transport, origin, request.method, url.raw_path, request.headers.raw, timeouts)


def _environment_proxies() -> dict[str, Any]:
    """httpx's proxy transports for the proxies in the environment, mounted by URL pattern exactly as
    httpx's ``trust_env`` mounts them (``NO_PROXY`` entries map to None: our transport)."""
    environment = importlib.import_module(_http.__name__ + "._utils").get_environment_proxies()
    limits = _http.Limits(max_connections=None, max_keepalive_connections=100)
    return {pattern: None if url is None else _http.HTTPTransport(proxy=url, limits=limits)
            for pattern, url in environment.items()}


def _shorter(ours: Any, theirs: Any) -> Any:
    """Each of the two timeouts' limits, the shorter of the two (None is no limit)."""
    if isinstance(theirs, (int, float)):
        theirs = _http.Timeout(theirs)
    if not isinstance(theirs, _http.Timeout):
        return ours

    def pick(a: float | None, b: float | None) -> float | None:
        return a if b is None else b if a is None else min(a, b)

    return _http.Timeout(connect=pick(ours.connect, theirs.connect), read=pick(ours.read, theirs.read),
                         write=pick(ours.write, theirs.write), pool=pick(ours.pool, theirs.pool))


def _sleep(seconds: float, cancel: Cancel | None) -> None:
    """Wait before a retry, in short steps, so a client that leaves is not kept waiting for."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if cancel is not None and cancel.reason is not None:
            raise Stopped(cancel.reason)
        time.sleep(min(left, 0.1))


def _send_direct(direct: Direct, payload: bytes, attempt: int, cancel: Cancel | None) -> UpstreamStream:
    backoff = _backoff(attempt)
    try:
        status, raw_headers, body = direct.send(payload, attempt, cancel)
    except _http.TimeoutException:
        log.warning("upstream timed out before the stream started")
        raise _Failed(UpstreamTimeout(), True, backoff) from None
    except _http.TransportError:
        raise _unreachable(backoff) from None
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw_headers}
    if status != 200:
        body.close()  # its text is never passed on (it can quote the key), nor worth reading
        log.warning("upstream refused the stream: status=%s request_id=%s", status, headers.get("x-request-id"))
        raise _Failed(*_status_failure(status, headers, attempt), status=status)
    _check_event_stream(headers.get("content-type", ""), body.close)
    return UpstreamStream(body=body, encoding=headers.get("content-encoding"))


def _check_event_stream(content_type: str, close: Any) -> None:
    mimetype = content_type.partition(";")[0].strip().lower()
    if mimetype != "text/event-stream":
        close()
        log.warning("upstream answered 200 with %r instead of an event stream", mimetype[:60])
        raise UpstreamMalformed("The model provider did not answer with an event stream.")


def _unreachable(backoff: float) -> _Failed:
    """The upstream could not be reached (or dropped the connection before a response): retried."""
    log.warning("upstream could not be reached")
    return _Failed(UpstreamUnavailable(), True, backoff)


def _backoff(attempt: int) -> float:
    return min(INITIAL_RETRY_DELAY * 2.0**attempt, MAX_RETRY_DELAY) * (1 - 0.25 * random.random())


def _status_failure(status: int, headers: Any, attempt: int) -> tuple[UpstreamError, bool, float]:
    """A refusal by status, as the SDK retries them: 408, 409, 429 and 5xx, unless
    ``x-should-retry`` says otherwise; after ``Retry-After`` when it is sane."""
    should = headers.get("x-should-retry")
    retry = should == "true" or (should != "false" and (status in (408, 409, 429) or status >= 500))
    wait = retry_after_seconds(headers)
    return _status_error(status, headers), retry, _backoff(attempt) if wait is None else wait


def _sdk_failure(exc: openai.OpenAIError) -> _Failed:
    """What an SDK error means for the client, whether to retry it, and after how long."""
    if isinstance(exc, openai.APIStatusError):
        log.warning("upstream refused the stream: status=%s request_id=%s", exc.status_code, exc.request_id)
        return _Failed(*_status_failure(exc.status_code, exc.response.headers, 0), status=exc.status_code)
    if isinstance(exc, openai.APITimeoutError):
        log.warning("upstream timed out before the stream started")
        return _Failed(UpstreamTimeout(), True, _backoff(0))
    if isinstance(exc, openai.APIConnectionError):
        return _unreachable(_backoff(0))
    log.warning("upstream failed before the stream started: %s", type(exc).__name__)
    return _Failed(UpstreamError(), False, _backoff(0))


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

    __slots__ = ("_response", "_body", "_socket", "_encoding", "_next", "stopped", "api", "__weakref__")

    def __init__(self, response: Any = None, *, body: _transport.Body | None = None,
                 encoding: str | None = None) -> None:
        """From an httpx response, or from our transport's body straight (the default client),
        compressed with ``encoding`` if the upstream sent it so although it was not asked to."""
        self._response: Any = response if response is not None else body
        self._next: Callable[[], bytes] | None = None
        self.stopped: str | None = None
        self.api = CHAT
        """The upstream API that answers (the upstream sets it)."""
        if body is None:
            body = response.extensions.get("chatstream_body")
            encoding = response.headers.get("content-encoding")
        self._encoding = None if encoding is None or encoding.strip().lower() == "identity" else encoding
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
        return iter(self.read, None)  # ends at read's StopIteration (read never returns None)

    def read(self) -> bytes:
        """The next bytes of the body; ``StopIteration`` at its end, ``Stopped`` once stopped. A plain
        call (the relay's reads go through no generator of ours: a waiting stream holds less)."""
        if self._next is None:
            self._next = self._reader()
        try:
            data = self._next()
        except (StopIteration, _http.TransportError, _http.StreamError, _http.DecodingError, OSError, ValueError):
            if self.stopped is not None:
                raise Stopped(self.stopped) from None
            raise
        if self.stopped is not None:
            raise Stopped(self.stopped)
        return data

    def _reader(self) -> Callable[[], bytes]:
        response = self._response
        if self._body is not None and self._encoding is None:
            return self._body.read  # type: ignore[no-any-return]
        if self._body is not None:
            # A gateway compressed the body anyway: httpx's decoders, for the encodings httpx knows.
            source = _http.Response(200, headers={"content-encoding": self._encoding}, stream=self._body).iter_bytes()
        elif self._encoding is not None:
            source = response.iter_bytes()
        else:
            source = iter(response.stream)  # the byte stream itself, without iter_bytes' decoder layers
        return source.__next__  # type: ignore[no-any-return]

    def stop(self, reason: str) -> None:
        """Stop the stream from another greenlet or thread; its reader ends with ``Stopped``."""
        if self.stopped is not None and reason != StopReason.STOPPED:
            return
        self.stopped = reason
        if self._socket is not None:
            shutdown(self._socket)

    def ready(self, timeout: float) -> bool | None:
        """Will a read bring something within ``timeout``? None where that cannot be known
        without reading (an httpx response of a custom client)."""
        return self._body.ready(timeout) if self._body is not None else None

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


def warm_up_stream() -> UpstreamStream:
    """One fake completion, opened through the SDK's request path in memory: a worker's warm start."""

    def answer(request: Any) -> Any:
        return _http.Response(200, headers={"content-type": "text/event-stream"}, content=_WARM_UP_BODY)

    client = openai.OpenAI(api_key="warm-up", base_url="http://warm-up.invalid/v1", max_retries=0,
                           http_client=_http.Client(transport=_http.MockTransport(answer)))
    upstream = Upstream(Settings(), client)
    return upstream.open(ChatRequest(messages=[{"role": "user", "content": "hi"}], model="warm-up", max_tokens=1))


def _status_error(status: int, headers: Any) -> UpstreamError:
    if status in (401, 403):
        return UpstreamAuthError()
    if status == 429:
        return UpstreamRateLimited(retry_after=checked_retry_after(headers.get("retry-after")))
    if status in (408, 504):
        return UpstreamTimeout()
    if status >= 500:
        return UpstreamUnavailable()
    return UpstreamRejected()
