"""An app with a tool that waits at a gate (a file the test creates), to leave during a tool run.
Run under gunicorn by tests/test_tools.py."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from flask import Flask

from flask_chatstream import create_blueprint

logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
chat = create_blueprint(first_event_wait=0.1)
GATE = Path(os.environ["TOOL_GATE"])


@chat.tool
def wait_at_gate() -> str:
    """Wait until the test opens the gate."""
    while not GATE.exists():
        time.sleep(0.05)  # cooperative under gevent
    return "through"


app.register_blueprint(chat, url_prefix="/api")
