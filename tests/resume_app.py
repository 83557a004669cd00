"""The README app with resumable streams, for the resume and fleet tests, run under gunicorn.

Settings come from ``CHATSTREAM_*`` environment variables. The client key is the ``X-User`` header,
as an app's logged-in user would be: it stays the same across connections and instances.
``after_stream`` logs each stream's outcome."""

from __future__ import annotations

import logging
import os

from flask import Flask, request

from flask_chatstream import ChatResult, create_blueprint

logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
chat = create_blueprint(client_key=lambda: request.headers.get("X-User", "anonymous"))


@chat.after_stream
def log_outcome(result: ChatResult) -> None:
    logging.getLogger("resume_app").info("after_stream id=%s outcome=%s text=%r", result.id, result.outcome,
                                         result.text)


@chat.may_resume
def own_or_delegated(stream_id: str, owner: str) -> bool:
    """The client that started it, or one that reads for it (``X-Reads-For``), as a support desk might."""
    return owner in (request.headers.get("X-User", "anonymous"), request.headers.get("X-Reads-For"))


app.register_blueprint(chat, url_prefix="/api")
