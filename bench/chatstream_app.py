"""This project as the benchmark measures it: the README's app, the blueprint and nothing else (the
example app adds a database, hooks and a tool, which are the app's costs, not the relay's)."""

from __future__ import annotations

import os

from flask import Flask

from flask_chatstream import create_blueprint

app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})  # for bench.compare
app.register_blueprint(create_blueprint(model="gpt-4o-mini"), url_prefix="/api")  # OPENAI_API_KEY, OPENAI_BASE_URL
