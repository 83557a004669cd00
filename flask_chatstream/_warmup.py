"""A worker's warm start: one fake answer through the whole path, in memory, before the first user."""

from __future__ import annotations

import logging

from ._config import Settings
from ._stream.relay import Relay
from ._upstream.client import warm_up_stream
from ._wire.encoders import NDJSON


def warm_up() -> None:
    """Run one fake completion through the SDK's request path and the relay, with no network.

    The first request after a worker starts otherwise pays for lazy imports and the SDK's first-use
    caches. ``flask_chatstream.gunicorn`` calls this in ``post_worker_init``.
    """
    log = logging.getLogger("flask_chatstream")
    log.addFilter(_not_the_warm_ups_line)  # what else it logs (the gevent set-up) still shows
    try:
        for _ in Relay(warm_up_stream(), NDJSON, Settings()):
            pass
    finally:
        log.removeFilter(_not_the_warm_ups_line)


def _not_the_warm_ups_line(record: logging.LogRecord) -> bool:
    """No stream line for the stream nobody asked for."""
    return not record.getMessage().startswith("stream id=warm-up ")
