"""gunicorn settings for streaming chat answers: gevent workers, a long graceful shutdown, a warm start.

    gunicorn -c python:flask_chatstream.gunicorn app:app
    gunicorn -c python:flask_chatstream.gunicorn -w 1 -b 127.0.0.1:9000 app:app   # flags override these

Environment: PORT (8000), HOST (127.0.0.1; use 0.0.0.0 in a container),
WEB_CONCURRENCY (workers, default one per CPU), WORKER_CONNECTIONS (4000),
GRACEFUL_TIMEOUT (120 s), LOG_LEVEL (info). With PROMETHEUS_MULTIPROC_DIR set, a worker that
exits has its metric files marked dead (its live gauges stop counting).

To change more, write your own file that starts with ``from flask_chatstream.gunicorn import *``.
"""

from __future__ import annotations

import multiprocessing
import os

__all__ = [
    "bind", "child_exit", "control_socket_disable", "errorlog", "graceful_timeout", "keepalive", "loglevel",
    "post_worker_init", "preload_app", "timeout", "worker_class", "worker_connections", "workers",
]

# Each worker is one process running one gevent hub: a stream waiting on the
# model costs a greenlet and a socket, not a thread. Work is I/O bound, so one
# worker per core is enough; more only adds memory.
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", 4000))

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"

# On SIGTERM, streams in flight get this long to finish before workers are killed.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", 120))
# For gevent workers this is the worker heartbeat, not a per-request limit:
# a long stream does not trip it.
timeout = 30
keepalive = 5

# No preload: the app (and its HTTP client pool) is built in each worker after
# fork, so no connection or lock is shared across processes.
preload_app = False

# gunicorn >= 27 opens a control socket at one fixed path per user, which two
# instances on one host (a blue/green pair, parallel tests) would fight over.
control_socket_disable = True

loglevel = os.environ.get("LOG_LEVEL", "info")
errorlog = "-"


def post_worker_init(worker: object) -> None:
    """Warm the SDK's request path in memory, so the worker's first real request is not slow."""
    from ._warmup import warm_up

    warm_up()


def child_exit(server: object, worker: object) -> None:
    """A worker exited: in Prometheus multiprocess mode, its live gauges (open streams) stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined,no-untyped-call]
