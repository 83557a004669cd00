"""Behind a reverse proxy: ProxyFix makes the remote address (the default client key) the real client's."""

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_chatstream import create_blueprint


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # one proxy in front (nginx)
    app.register_blueprint(create_blueprint(max_streams_per_client=1), url_prefix="/api")
    return app
