"""An app whose after_stream hook can be held at a gate, to show that it runs after the client's last
byte, and which reads on for clients that leave (``on_client_leave="finish"``). Run under gunicorn by
tests/test_hooks.py."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from flask import Flask

from flask_chatstream import ChatResult, create_blueprint

logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
chat = create_blueprint(on_client_leave="finish")
gate = threading.Event()
gate.set()
state: dict[str, Any] = {"waiting": 0, "saved": []}


@chat.after_stream
def save(result: ChatResult) -> None:
    if not gate.is_set():
        state["waiting"] += 1
        gate.wait()
        state["waiting"] -= 1
    state["saved"].append([result.outcome, result.text, result.delivered])


app.register_blueprint(chat, url_prefix="/api")


@app.get("/hook")
def hook() -> dict[str, Any]:
    return state


@app.post("/hook/hold")
def hold() -> dict[str, Any]:
    gate.clear()
    state["saved"] = []
    return state


@app.post("/hook/release")
def release() -> dict[str, Any]:
    gate.set()
    return state
