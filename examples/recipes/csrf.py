"""Flask-WTF's CSRF protection: the page sends the token, chatstream.js passes it on."""

from flask import Flask, render_template_string
from flask_wtf.csrf import CSRFProtect

from flask_chatstream import create_blueprint

csrf = CSRFProtect()
chat = create_blueprint()

PAGE = """<meta name="csrf-token" content="{{ csrf_token() }}">
<script type="module">
  import { streamChat } from "/api/chatstream.js";
  const token = document.querySelector('meta[name="csrf-token"]').content;
  for await (const event of streamChat("/api/chat", { content: "Hi" }, { headers: { "X-CSRFToken": token } })) {
    if (event.type === "delta") document.body.append(event.content);
  }
</script>"""


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "change me"
    app.config.update(config or {})
    csrf.init_app(app)
    # An API authenticated by a header token, not a cookie, needs no CSRF check: csrf.exempt(chat)
    app.register_blueprint(chat, url_prefix="/api")
    app.add_url_rule("/", "page", lambda: render_template_string(PAGE))
    return app
