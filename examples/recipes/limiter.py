"""Flask-Limiter: a rate limit on the chat's routes, answered as a JSON 429 with Retry-After."""

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from flask_chatstream import create_blueprint

limiter = Limiter(get_remote_address, storage_uri="memory://")
chat = create_blueprint()
limiter.limit("3 per minute", methods=["POST"])(chat)


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["RATELIMIT_HEADERS_ENABLED"] = True  # Retry-After (and X-RateLimit-*) on answers
    app.config.update(config or {})
    limiter.init_app(app)
    app.register_blueprint(chat, url_prefix="/api")
    return app
