"""An app whose blueprint gets its own openai client, speaking HTTP/2 (prior knowledge) to its base URL:
every stream of the worker shares one connection. Run by tests/test_http2.py under gunicorn."""

from __future__ import annotations

import logging
import os

import openai
from flask import Flask

from flask_chatstream import create_blueprint

client = openai.OpenAI(api_key=os.environ["OPENAI_API_KEY"], base_url=os.environ["OPENAI_BASE_URL"], max_retries=0,
                       http_client=openai.DefaultHttpxClient(http1=False, http2=True))
logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
app.register_blueprint(create_blueprint(client=client), url_prefix="/api")
