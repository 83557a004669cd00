"""``GET <prefix>/healthz`` and ``GET <prefix>/readyz``: for a load balancer, or Kubernetes' probes.

``healthz`` says the process is up and serving: it checks nothing else. ``readyz`` says the
blueprint can serve chats: the upstream answers (``GET /models``, with the key), and the shared state
answers: Redis a ``PING`` (``redis``) when ``redis_url`` is set, else the machine's state file can be
read and written (``state``) when there is one. Its answer is kept for ``CACHE`` seconds, so a probe every
second costs one upstream request every few; only one check runs at a time.

What counts as not ready is what every chat would fail on: an upstream that cannot be reached, does
not answer in time, refuses the key, or fails (5xx); or Redis down. A 404 (a server without
``/models``) or a 429 still proves the upstream is there. Mind that every instance shares the
upstream: when it fails, all of them are unready at once. (Shared state that is broken fails only
stops, resumes and caps across workers; but it is what they rely on, so it counts.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ._errors import UpstreamError

CACHE = 5.0
"""Seconds a readiness answer is kept."""
TIMEOUT = 3.0
"""Longest the upstream check may take."""
NOT_READY = ("upstream_unavailable", "upstream_timeout", "upstream_auth", "upstream_error")
"""Upstream error codes that every chat would fail with."""


class Readiness:
    def __init__(self, models: Callable[[float], object], shared: tuple[str, Callable[[], bool]] | None) -> None:
        self._models = models
        self._shared = shared
        """The shared state's check, by name (``redis``, ``state``), if there is shared state."""
        self._lock = threading.Lock()
        self._answer: tuple[float, bool, dict[str, str]] | None = None

    def check(self) -> tuple[bool, dict[str, str]]:
        """Whether it is ready, and each check's word (``ok``, or an error code)."""
        with self._lock:
            now = time.monotonic()
            if self._answer is None or now - self._answer[0] >= CACHE:
                checks = {"upstream": self._upstream()}
                if self._shared is not None:
                    name, answers = self._shared
                    checks[name] = "ok" if answers() else "unavailable"
                ready = all(word == "ok" for word in checks.values())
                self._answer = (time.monotonic(), ready, checks)
            return self._answer[1], dict(self._answer[2])

    def _upstream(self) -> str:
        try:
            self._models(TIMEOUT)
        except UpstreamError as error:
            return error.code if error.code in NOT_READY else "ok"
        return "ok"


def body(ready: bool, checks: dict[str, Any]) -> dict[str, Any]:
    return {"status": "ready" if ready else "not_ready", "checks": checks}
