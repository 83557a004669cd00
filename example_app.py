"""The example app: flask_chatstream at /api and a page at / that streams answers.

    gunicorn -c gunicorn.conf.py example_app:app     # production-style, gevent workers
    python example_app.py                            # Flask's dev server

With OPENAI_API_KEY set it talks to OpenAI (or to OPENAI_BASE_URL). Without
one it runs the offline demo: the stand-in model from flask_chatstream.testing,
on 127.0.0.1 inside this process, reached through the same openai client and
relay as the real thing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flask import Flask, Response, send_from_directory

from flask_chatstream import create_blueprint

EXAMPLES = Path(__file__).with_name("examples")
PAGE = EXAMPLES / "demo_page.html"
REACT_BUILD = EXAMPLES / "react-rtk-query" / "dist"
DEMO_MODEL = "offline-demo"
log = logging.getLogger("example_app")


def demo_reply(messages: Sequence[dict[str, Any]]) -> str:
    """A deterministic answer that shows the stream working end to end."""
    asked = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    asked = " ".join(asked.split())[:200]
    return (
        f"You asked: \u201c{asked}\u201d. This is the offline demo model, so the answer is canned, "
        "but the path is real: the openai client posted your prompt to a local OpenAI-compatible "
        "server, flask_chatstream relayed each chunk as it arrived, and your browser is reading "
        "the response body with fetch and a stream reader. Set OPENAI_API_KEY and restart to get "
        "answers from a real model through exactly the same code."
    )


def create_app() -> Flask:
    app = Flask(__name__)
    # CHATSTREAM_* settings may come from the environment, e.g. CHATSTREAM_MODEL=gpt-4.1-mini.
    app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    demo = not os.environ.get("OPENAI_API_KEY")
    options: dict[str, Any] = {}
    if demo:
        from flask_chatstream.testing import Script, StandInServer

        upstream = StandInServer(Script(reply=demo_reply, first_delay=0.3, delay=0.04)).start()
        options = {"api_key": "offline-demo", "base_url": upstream.url, "model": DEMO_MODEL}
        log.warning("DEMO MODE: no OPENAI_API_KEY, answers come from the offline demo model at %s", upstream.url)
    app.register_blueprint(create_blueprint(**options), url_prefix="/api")

    page = PAGE.read_text(encoding="utf-8").replace(
        "<!--BANNER-->",
        '<p class="demo" id="demo-banner">Offline demo: answers come from a canned demo model. '
        "Set OPENAI_API_KEY to use a real one.</p>"
        if demo
        else "",
    )

    @app.get("/")
    def index() -> Response:
        return Response(page, content_type="text/html; charset=utf-8")

    @app.get("/react/")
    @app.get("/react/<path:name>")
    def react_example(name: str = "index.html") -> Response:
        """The React + RTK Query example, once built (make test builds it)."""
        if not (REACT_BUILD / "index.html").is_file():
            return Response("Build the React example first: cd examples/react-rtk-query && npm ci && npm run build\n",
                            status=404, content_type="text/plain; charset=utf-8")
        return send_from_directory(REACT_BUILD, name)

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", 8000)), threaded=True)
