"""A host app whose own before_request reads every JSON body (audit logging), for gunicorn tests."""

from __future__ import annotations

import logging

from flask import Flask, request

from flask_chatstream import create_blueprint

log = logging.getLogger("audit")
logging.basicConfig(level=logging.INFO)

app = Flask(__name__)


@app.before_request
def audit() -> None:
    if request.is_json:
        log.info("audited chat body: %s", request.get_json(silent=True))


app.register_blueprint(create_blueprint(max_retries=0), url_prefix="/api")
