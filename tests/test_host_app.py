"""A good citizen inside the host app: its error handlers, its signals and its after_request hooks."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, Response, got_request_exception, jsonify

from flask_chatstream import create_blueprint
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY


class NotLoggedIn(Exception):
    pass


def host_app(upstream: StandInServer, **options: Any) -> tuple[Flask, Any]:
    app = Flask(__name__)
    blueprint = create_blueprint(api_key=API_KEY, base_url=upstream.url, max_retries=0, **options)
    app.register_blueprint(blueprint, url_prefix="/api")
    return app, blueprint


def test_the_apps_own_error_handlers_win_for_its_before_request(upstream: StandInServer) -> None:
    app, _ = host_app(upstream)

    @app.before_request
    def require_login() -> None:
        raise NotLoggedIn()

    @app.errorhandler(NotLoggedIn)
    def login_first(error: NotLoggedIn) -> tuple[Response, int]:
        return jsonify(error={"code": "login_required", "message": "Log in."}), 401

    response = app.test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "login_required"
    assert upstream.stats.requests == 0


def test_an_abort_in_the_apps_before_request_keeps_the_apps_handler(upstream: StandInServer) -> None:
    app, _ = host_app(upstream)

    @app.before_request
    def closed() -> None:
        from flask import abort

        abort(503)

    @app.errorhandler(503)
    def maintenance(error: Exception) -> tuple[str, int]:
        return "down for maintenance", 503

    response = app.test_client().post("/api/chat", json={"content": "hi"})
    assert (response.status_code, response.get_data(as_text=True)) == (503, "down for maintenance")


def test_unexpected_errors_reach_got_request_exception(upstream: StandInServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    def broken_key() -> str:
        raise RuntimeError("a bug in the host's client_key")

    app, _ = host_app(upstream, client_key=broken_key)
    seen: list[BaseException] = []

    def record(sender: Flask, exception: BaseException, **extra: Any) -> None:
        seen.append(exception)

    got_request_exception.connect(record, app)
    try:
        response = app.test_client().post("/api/chat", json={"content": "hi"})
    finally:
        got_request_exception.disconnect(record, app)
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_error"
    assert [type(e) for e in seen] == [RuntimeError]
    assert "a bug in the host's client_key" in caplog.text  # logged with its traceback
    assert "a bug" not in response.get_data(as_text=True)


@pytest.mark.parametrize("how", ["replaces", "raises"])
def test_a_response_the_server_never_gets_still_releases_its_stream(upstream: StandInServer, how: str) -> None:
    app, _ = host_app(upstream, max_streams_per_client=1, first_event_wait=0.1)
    upstream.script = Script(reply="never read", hold_after=0)
    replace = {"on": True}

    @app.after_request
    def meddle(response: Response) -> Response:
        if not replace["on"]:
            return response
        if how == "raises":
            raise RuntimeError("the host's after_request failed")
        return Response("replaced", status=200)

    client = app.test_client()
    first = client.post("/api/chat", json={"content": "hi"})
    assert first.status_code == (200 if how == "replaces" else 500)
    stats = upstream.wait_for(lambda s: s.open == 0)  # its upstream was closed
    assert (stats.opened, stats.cancelled) == (1, 1)
    replace["on"] = False
    upstream.release()
    second = client.post("/api/chat", json={"content": "hi"})
    assert second.status_code == 200  # and its slot given back: no 429
