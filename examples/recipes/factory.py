"""An app factory, with settings from the environment: FLASK_CHATSTREAM_MODEL=gpt-4.1 and the like."""

from flask import Flask

from flask_chatstream import create_blueprint

chat = create_blueprint()  # one blueprint object, registered on every app the factory makes
support = create_blueprint("support", system_prompt="You answer questions about our product.")


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env()  # FLASK_CHATSTREAM_MODEL -> CHATSTREAM_MODEL, for every blueprint
    app.config.update(config or {})  # CHATSTREAM_SUPPORT_MODEL: the "support" blueprint's own
    app.register_blueprint(chat, url_prefix="/api")
    app.register_blueprint(support, url_prefix="/support")
    return app
