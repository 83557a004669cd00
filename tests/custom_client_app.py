"""An app whose blueprint gets its own openai client (``client=``), over HTTP/1.1 or, with
CUSTOM_HTTP2=1, HTTP/2 with prior knowledge. Run under gunicorn by the tests."""

from __future__ import annotations

import logging
import os

import openai
from flask import Flask

from flask_chatstream import create_blueprint

http2 = os.environ.get("CUSTOM_HTTP2") == "1"
client = openai.OpenAI(api_key=os.environ["OPENAI_API_KEY"], base_url=os.environ["OPENAI_BASE_URL"], max_retries=0,
                       http_client=openai.DefaultHttpxClient(http1=not http2, http2=http2))
logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
app.register_blueprint(create_blueprint(client=client), url_prefix="/api")
