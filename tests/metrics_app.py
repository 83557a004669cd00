"""An app that exposes its metrics the standard prometheus_client way, as the README shows: under
gunicorn with PROMETHEUS_MULTIPROC_DIR, a MultiProcessCollector sums every worker's. Each response
says which worker served it; ``/_hog/<name>`` holds a worker so that the other serves. Run under
gunicorn by tests/test_observe.py."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Response
from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from flask_chatstream import create_blueprint

app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
chat = create_blueprint(first_event_wait=0.1)


@chat.tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


app.register_blueprint(chat, url_prefix="/api")


@app.get("/_hog/<name>")
def hog(name: str) -> str:
    """Hold this worker's gevent hub, spinning without yielding, until the test releases it: meanwhile
    the other worker takes every new connection (tests/test_observe.py's Hog)."""
    hogs = Path(os.environ["HOG_DIR"])
    (hogs / f"{name}.hogging").write_text(str(os.getpid()))
    while not (hogs / f"{name}.release").exists():
        pass
    return "released"


@app.after_request
def which_worker(response: Response) -> Response:
    response.headers["X-Worker"] = str(os.getpid())
    return response


registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app(registry)})  # type: ignore[method-assign]
