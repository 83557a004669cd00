"""An app for AG-UI clients: a server-side tool, one that needs a person's approval, and one that
changes the agent's state. Run under gunicorn (``tests.agui_app:create_app()``) by tests/test_agui.py,
where ``@ag-ui/client``'s HttpAgent drives it, and in-process by the same file's other tests."""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask

from flask_chatstream import ChatRequest, create_blueprint, emit, patch_state, set_state

logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")


def create_app(**options: Any) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "agui-tests-secret"
    app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
    options.setdefault("first_event_wait", 0.2)
    chat = create_blueprint(**options)

    @chat.tool
    def current_time() -> str:
        """The time now, as ISO 8601."""
        return "2026-12-06T12:00:00Z"

    @chat.tool(needs_approval=True)
    def delete_file(path: str) -> str:
        """Delete a file (asks the person first)."""
        return f"deleted {path}"

    @chat.tool
    def remember(note: str, chat_request: ChatRequest) -> str:
        """Keep a note in the agent's state."""
        state = chat_request.state if isinstance(chat_request.state, dict) else {}
        emit("progress", {"saving": note})
        set_state({**state, "notes": [*state.get("notes", []), note]})
        patch_state([{"op": "replace", "path": "/saved", "value": True}] if "saved" in state
                    else [{"op": "add", "path": "/saved", "value": True}])
        return "noted"

    app.register_blueprint(chat, url_prefix="/api")
    return app
