"""An app with budgets, for the budget tests, run under gunicorn.

Settings come from ``CHATSTREAM_*`` environment variables. The client key is the ``X-User`` header, as
a logged-in user's id would be, and goes to the model as ``user`` (so the stand-in counts what it
generated for each client). Plans come from the ``X-Plan`` header: ``pro`` has no limit, ``trial`` the
budget in ``TRIAL_BUDGET``, anyone else the ``token_budget`` setting."""

from __future__ import annotations

import dataclasses
import os

from flask import Flask, current_app, request

from flask_chatstream import ChatRequest, create_blueprint

app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
chat = create_blueprint(client_key=lambda: request.headers.get("X-User", "anonymous"))


@chat.before_upstream
def name_the_user(request_: ChatRequest) -> ChatRequest:
    return dataclasses.replace(request_, params={**request_.params, "user": request.headers.get("X-User", "")})


@chat.token_budget
def by_plan(request_: ChatRequest) -> str | None:
    plan = request.headers.get("X-Plan")
    if plan == "pro":
        return None
    if plan == "trial":
        return os.environ["TRIAL_BUDGET"]
    return current_app.config.get("CHATSTREAM_TOKEN_BUDGET")


app.register_blueprint(chat, url_prefix="/api")
