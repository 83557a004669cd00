"""Upstream failures before the stream starts become real statuses, without upstream text."""

from __future__ import annotations

import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, AppFactory
from .servers import free_port


@pytest.mark.parametrize(
    ("status", "ours", "code"),
    [
        (400, 502, "upstream_rejected"),
        (401, 502, "upstream_auth"),
        (403, 502, "upstream_auth"),
        (404, 502, "upstream_rejected"),
        (429, 429, "rate_limited"),
        (500, 502, "upstream_unavailable"),
        (503, 502, "upstream_unavailable"),
    ],
)
def test_upstream_status(make_app: AppFactory, upstream: StandInServer, status: int, ours: int, code: str) -> None:
    upstream.script = Script(status=status)
    response = make_app().test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == ours
    assert response.get_json()["error"]["code"] == code
    # the stand-in quotes the key back in its error, as OpenAI does
    assert API_KEY not in response.get_data(as_text=True)
    assert "Retry-After" not in response.headers


def test_rate_limit_passes_retry_after(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(status=429, retry_after="17")
    response = make_app().test_client().post("/api/chat", json={"content": "hi"})
    assert (response.status_code, response.headers["Retry-After"]) == (429, "17")


def test_connection_refused_is_502(make_app: AppFactory) -> None:
    app = make_app(base_url=f"http://127.0.0.1:{free_port()}/v1", connect_timeout=2)
    response = app.test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 502 and response.get_json()["error"]["code"] == "upstream_unavailable"


def test_no_headers_within_the_timeout_is_504(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(header_delay=5)
    response = make_app(read_timeout=0.3).test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 504 and response.get_json()["error"]["code"] == "upstream_timeout"


def test_retries_are_the_clients(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(status=500)
    response = make_app(max_retries=1).test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 502 and upstream.stats.requests == 2


def test_warm_up_runs_the_sdk_path_in_memory(upstream: StandInServer) -> None:
    from flask_chatstream import warm_up

    warm_up()  # no network: an unreachable .invalid host would fail loudly
    assert upstream.stats.requests == 0


@pytest.mark.parametrize(("sent", "passed_on"), [
    ("17", "17"), (" 17 ", "17"), ("0", "0"),
    ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ("soon", None), ("1e3", None), ("-5", None), ("1.5", None), ("", None), ("99999999999", None),
])
def test_retry_after_is_passed_on_only_when_valid(make_app: AppFactory, upstream: StandInServer, sent: str,
                                                  passed_on: str | None) -> None:
    upstream.script = Script(status=429, retry_after=sent)
    response = make_app().test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 429 and response.headers.get("Retry-After") == passed_on


def test_retries_honour_a_short_retry_after(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(status=429, retry_after="0")
    response = make_app(max_retries=2).test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 429 and upstream.stats.requests == 3


def test_a_retry_after_past_max_retry_wait_goes_straight_to_the_client(make_app: AppFactory,
                                                                       upstream: StandInServer) -> None:
    upstream.script = Script(status=429, retry_after="30")
    response = make_app(max_retries=5, max_retry_wait=5).test_client().post("/api/chat", json={"content": "hi"})
    assert (response.status_code, response.headers["Retry-After"]) == (429, "30")
    assert upstream.stats.requests == 1  # the client decides whether to wait 30 s, not the relay


def test_backoff_counts_against_max_retry_wait(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(status=503)
    response = make_app(max_retries=5, max_retry_wait=0).test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 502 and upstream.stats.requests == 1


def test_a_custom_clients_retry_count_is_kept(make_app: AppFactory, upstream: StandInServer) -> None:
    import openai

    upstream.script = Script(status=500)
    client = openai.OpenAI(api_key=API_KEY, base_url=upstream.url, max_retries=1)
    response = make_app(client=client).test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 502 and upstream.stats.requests == 2


@pytest.mark.parametrize("shorter", ["the client's", "ours"])
@pytest.mark.parametrize("where", ["before the head", "in the answer"])
def test_the_shorter_of_two_timeouts_wins(make_app: AppFactory, upstream: StandInServer, where: str,
                                          shorter: str) -> None:
    """A ``client=`` built with its own timeout keeps it beside ``read_timeout``. (Without that, the
    longer one holds the request, and the test's own timeout fails it.)"""
    import openai

    from .streams import check_event_stream, events_of

    theirs, ours = (0.5, 3600.0) if shorter == "the client's" else (3600.0, 0.5)
    upstream.script = (Script(header_delay=3600) if where == "before the head"
                       else Script(reply="one two three four", stall_after=2, stall=3600))
    client = openai.OpenAI(api_key=API_KEY, base_url=upstream.url, max_retries=0, timeout=theirs)
    app = make_app(client=client, read_timeout=ours, first_event_wait=0)
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"})
    if where == "before the head":
        assert response.status_code == 504 and response.get_json()["error"]["code"] == "upstream_timeout"
    else:
        assert response.status_code == 200
        assert check_event_stream(events_of("ndjson", response.get_data()))["error"]["code"] == "upstream_timeout"
