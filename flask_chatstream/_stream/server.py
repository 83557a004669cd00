"""What the WSGI server can do for a stream, and one warning when it cannot do its part.

The relay needs the client's socket to notice a departure while the model is silent, to send
heartbeats and to time out slow request bodies and stalled clients; gunicorn and Werkzeug's dev
server expose it, uWSGI and waitress do not. Long streams need a server that does not hold a
process per request (gunicorn's sync worker kills them at its timeout), and under gevent the
sockets must be patched, or one stream's wait blocks every other.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from .. import _gevent

log = logging.getLogger("flask_chatstream")

_warned: set[str] = set()


def check_server(environ: dict[str, Any], client: socket.socket | None) -> None:
    """Log each problem with the server once per process, at the first request that shows it."""
    software = str(environ.get("SERVER_SOFTWARE", "unknown"))
    if client is None:
        _warn("no-socket", "flask_chatstream: the WSGI server (%s) does not expose the client's socket, so a "
              "client that leaves while the model is silent is only noticed at the next write, and there are "
              "no heartbeats, send timeouts or request body timeouts. gunicorn and Werkzeug expose it.", software)
    if (software.startswith("gunicorn") and not environ.get("wsgi.multithread")
            and not _gevent.patched("socket")):
        _warn("sync-worker", "flask_chatstream: gunicorn is running a sync worker: each stream holds the whole "
              "process, and the worker timeout kills long answers. Use gevent workers "
              "(gunicorn -c python:flask_chatstream.gunicorn, or -k gevent).")
    if "gevent" in sys.modules and not _gevent.patched("socket") and _gevent.running_in_gevent_server(environ):
        _warn("unpatched", "flask_chatstream: the server runs requests in greenlets but gevent has not patched "
              "the socket module, so one stream waiting on the model blocks every other. Call "
              "gevent.monkey.patch_all() first thing, or use gunicorn's gevent worker.")


def _warn(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)
