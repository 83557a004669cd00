"""Flask-Compress with its defaults: pages and JSON are compressed, chat streams are not."""

from flask import Flask
from flask_compress import Compress

from flask_chatstream import create_blueprint


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    # Compressors hold tokens back until a block fills, so chat streams go out uncompressed
    # (with a warning, once). COMPRESS_STREAMS = False says so up front, and silences it.
    app.config.update(config or {})
    Compress(app)
    app.register_blueprint(create_blueprint(), url_prefix="/api")
    return app
