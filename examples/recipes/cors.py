"""Flask-CORS: the page on one origin (a dev server), the API on another, with cookies."""

import os

from flask import Flask, session
from flask_cors import CORS

from flask_chatstream import create_blueprint

chat = create_blueprint(client_key=lambda: session.get("user", "anonymous"))


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "change me"
    app.config.update(config or {})
    page_origin = os.environ.get("PAGE_ORIGIN", "http://localhost:5173")
    CORS(app, resources={r"/api/*": {"origins": [page_origin]}}, supports_credentials=True)

    @app.post("/api/login")
    def login() -> tuple[str, int]:
        session["user"] = "ada"
        return "", 204

    app.register_blueprint(chat, url_prefix="/api")
    return app
