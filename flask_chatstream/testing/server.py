"""The stand-in server: its lifecycle, its counters, and ``attach()``, which points a host app's chat
blueprints at it."""

from __future__ import annotations

import dataclasses
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .handler import Handler, Server
from .script import Script, Stats

if TYPE_CHECKING:
    from flask import Flask

STAND_IN_KEY = "sk-stand-in"


class StandInServer:
    """The stand-in upstream, on 127.0.0.1 in a background thread."""

    def __init__(self, script: Script | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.script = script or Script()
        self.scripts: dict[str, Script] = {}
        """Scripts chosen by the request's ``model``, before ``script``."""
        self._stats = Stats()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._gate = threading.Event()
        self._httpd = Server((host, port), Handler)
        self._httpd.standin = self
        self._tls = tls
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give the openai client."""
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}/v1"

    @property
    def config(self) -> dict[str, str]:
        """``CHATSTREAM_*`` keys for a test app's config, so its blueprints register without a real
        key and talk to this server. Per-blueprint keys still win over these: ``attach`` the app too."""
        return {"CHATSTREAM_API_KEY": STAND_IN_KEY, "CHATSTREAM_BASE_URL": self.url}

    def attach(self, app: Flask) -> Flask:
        """Point every chat blueprint registered on ``app`` at this server, whatever the app's config,
        its per-blueprint keys or the environment (``OPENAI_API_KEY``) say: a test of the host app can
        never reach a real provider, or spend a real key. A blueprint built with ``client=`` gets a
        copy of that client with this base URL. Call it after the blueprints are registered."""
        from .._blueprint import EXTENSION_KEY, build_state

        states = app.extensions.get(EXTENSION_KEY)
        if not states:
            raise RuntimeError("attach() found no chatstream blueprint on this app. Did you call it before "
                               "app.register_blueprint(create_blueprint(...))?")
        for name, state in states.items():
            settings = dataclasses.replace(state.settings, base_url=self.url, api_key=STAND_IN_KEY)
            client = state.upstream.client.copy(base_url=self.url, api_key=STAND_IN_KEY) \
                if state.upstream.custom_client else None
            states[name] = build_state(settings, client, state.client_key, state.blueprint, state.shared, state.scope)
        return app

    def release(self) -> None:
        """Let streams held by ``Script.hold_after`` go on (and any that get there later)."""
        self._gate.set()

    def start(self) -> StandInServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        with self._lock:
            return dataclasses.replace(self._stats, bodies=deque(self._stats.bodies, maxlen=100), spent=dict(self._stats.spent))

    def reset(self) -> None:
        """Zero the counters (but for the streams open now) and close the gate again."""
        with self._lock:
            self._stats = Stats(open=self._stats.open)
        self._gate.clear()

    def wait_for(self, condition: Callable[[Stats], bool], timeout: float = 30.0) -> Stats:
        """Poll the counters until ``condition`` holds; raise ``TimeoutError`` with them if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats
            if condition(stats):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"stand-in condition not met within {timeout}s: {stats}")
            time.sleep(0.01)

    def _count(self, **changes: int) -> None:
        with self._lock:
            for name, change in changes.items():
                setattr(self._stats, name, getattr(self._stats, name) + change)
            self._stats.peak_open = max(self._stats.peak_open, self._stats.open)

    def _spend(self, user: str, tokens: int) -> None:
        with self._lock:
            self._stats.spent[user] = self._stats.spent.get(user, 0) + tokens

    def _record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._stats.requests += 1
            self._stats.bodies.append(body)
