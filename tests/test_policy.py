"""Who may stream: the per-client cap, and the host app's own auth in front of the blueprint."""

from __future__ import annotations

from flask import Flask, jsonify, request

from flask_chatstream import create_blueprint
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, AppFactory


def test_per_client_cap_on_concurrent_streams(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(reply="a b c d e f", hold_after=1)  # open until the test releases them
    client = make_app(max_streams_per_client=2).test_client()
    first = client.post("/api/chat", json={"content": "1"}, buffered=False)
    second = client.post("/api/chat", json={"content": "2"}, buffered=False)
    third = client.post("/api/chat", json={"content": "3"})
    assert (first.status_code, second.status_code) == (200, 200)
    assert third.status_code == 429 and third.get_json()["error"]["code"] == "too_many_streams"
    other = client.post("/api/chat", json={"content": "4"}, environ_base={"REMOTE_ADDR": "10.9.9.9"}, buffered=False)
    assert other.status_code == 200  # another client has its own allowance
    other.close()
    first.close()  # a stream that ends frees its place
    fourth = client.post("/api/chat", json={"content": "5"}, buffered=False)
    assert fourth.status_code == 200
    upstream.release()
    for response in (second, fourth):
        b"".join(response.response)  # streams that finish free theirs too
    assert client.post("/api/chat", json={"content": "6"}).status_code == 200
    assert upstream.stats.requests == 5  # six asked; the refused one never reached the model


def test_refused_upstream_frees_the_place(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(status=500)
    client = make_app(max_streams_per_client=1).test_client()
    assert client.post("/api/chat", json={"content": "x"}).status_code == 502
    upstream.script = Script()
    assert client.post("/api/chat", json={"content": "x"}).status_code == 200


def test_cap_by_user_id(upstream: StandInServer) -> None:
    app = Flask(__name__)
    blueprint = create_blueprint(api_key=API_KEY, base_url=upstream.url, max_streams_per_client=1,
                                 client_key=lambda: request.headers.get("X-User", "anonymous"))
    app.register_blueprint(blueprint, url_prefix="/api")
    upstream.script = Script(reply="a b c", hold_after=1)
    client = app.test_client()
    alice = client.post("/api/chat", json={"content": "x"}, headers={"X-User": "alice"}, buffered=False)
    assert client.post("/api/chat", json={"content": "x"}, headers={"X-User": "alice"}).status_code == 429
    bob = client.post("/api/chat", json={"content": "x"}, headers={"X-User": "bob"}, buffered=False)
    assert (alice.status_code, bob.status_code) == (200, 200)
    alice.close()
    bob.close()


def test_host_apps_auth_in_front_of_the_blueprint(upstream: StandInServer) -> None:
    app = Flask(__name__)
    blueprint = create_blueprint(api_key=API_KEY, base_url=upstream.url)

    @blueprint.before_request
    def require_login():  # type: ignore[no-untyped-def]
        if request.headers.get("Authorization") != "Bearer let-me-in":
            return jsonify(error={"code": "unauthorized", "message": "Log in first."}), 401
        return None

    app.register_blueprint(blueprint, url_prefix="/api")
    client = app.test_client()
    refused = client.post("/api/chat", json={"content": "x"})
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"
    assert upstream.stats.requests == 0
    allowed = client.post("/api/chat", json={"content": "x"}, headers={"Authorization": "Bearer let-me-in"})
    assert allowed.status_code == 200 and upstream.stats.requests == 1
