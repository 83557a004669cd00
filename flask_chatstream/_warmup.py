"""A worker's warm start: one fake answer through the whole path, in memory, before the first user."""

from __future__ import annotations

import logging

from ._config import Settings
from ._formats import NDJSON
from ._relay import Relay
from ._upstream import warm_up_stream


def warm_up() -> None:
    """Run one fake completion through the SDK's request path and the relay, with no network.

    The first request after a worker starts otherwise pays for lazy imports and the SDK's first-use
    caches. ``flask_chatstream.gunicorn`` calls this in ``post_worker_init``.
    """
    log = logging.getLogger("flask_chatstream")
    quiet, log.disabled = log.disabled, True  # no stream line for a stream nobody asked for
    try:
        for _ in Relay(warm_up_stream(), NDJSON, Settings()):
            pass
    finally:
        log.disabled = quiet
