"""The fault matrix, against gunicorn + gevent: every upstream fault, in every format, has a
documented outcome (README, "Fault matrix"), and the worker serves the next request normally."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import Gunicorn, free_port, stand_in_env
from .streams import answer_of, check_event_stream, events_of, post_chat

pytestmark = pytest.mark.server

REPLY = "one two three four five six"
FORMATS = ["text", "ndjson", "sse"]

# fault -> (script, code after the first byte)
MID_STREAM = {
    "cut": (Script(reply=REPLY, cut_after=2), "upstream_interrupted"),
    "stall past read timeout": (Script(reply=REPLY, stall_after=2, stall=60), "upstream_timeout"),
    # read_timeout measures silence in data events: keep-alive comments do not keep a stall alive
    "stall with keep-alive comments": (Script(reply=REPLY, stall_after=2, stall=60, comment_every=0.1),
                                       "upstream_timeout"),
    "malformed data": (Script(reply=REPLY, malformed_after=2), "upstream_malformed"),
    "in-stream error event": (Script(reply=REPLY, error_after=2), "upstream_error"),
}
# fault -> (script, status, code before the first byte)
BEFORE_STREAM = {
    "no first byte in time": (Script(header_delay=30), 504, "upstream_timeout"),
    "no first token in time": (Script(first_delay=60), 504, "upstream_timeout"),
    "200 with JSON": (Script(content_type="application/json", body='{"object": "chat.completion"}'), 502,
                      "upstream_malformed"),
    "200 with an HTML page": (Script(content_type="text/html; charset=utf-8", body="<h1>502</h1>"), 502,
                              "upstream_malformed"),
    "in-stream error before any text": (Script(reply=REPLY, error_after=0), 502, "upstream_error"),
    "malformed before any text": (Script(reply=REPLY, malformed_after=0), 502, "upstream_malformed"),
    "a 16 MB line that never ends": (Script(giant_line=16 * 1024 * 1024), 502, "upstream_malformed"),
    **{f"status {s}": (Script(status=s), ours, code) for s, ours, code in [
        (400, 502, "upstream_rejected"), (401, 502, "upstream_auth"), (403, 502, "upstream_auth"),
        (404, 502, "upstream_rejected"), (429, 429, "rate_limited"), (500, 502, "upstream_unavailable"),
        (503, 502, "upstream_unavailable")]},
}


@pytest.fixture(scope="module")
def server(_standin: StandInServer) -> Iterator[Gunicorn]:
    env = stand_in_env(_standin.url, read_timeout="2")
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


def request(server: Gunicorn, fmt: str) -> tuple[int, bytes, bool]:
    """Status, body, and whether the body ended properly."""
    conn, response = post_chat(server.port, fmt, timeout=30)
    try:
        return response.status, response.read(), True
    except http.client.IncompleteRead as exc:
        return response.status, exc.partial, False
    finally:
        conn.close()


def survives(server: Gunicorn, upstream: StandInServer, worker: int) -> None:
    upstream.script = Script(reply=REPLY)
    assert request(server, "text") == (200, REPLY.encode(), True)
    assert server.worker_pids() == [worker]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", list(MID_STREAM))
def test_fault_after_the_first_byte(server: Gunicorn, upstream: StandInServer, fmt: str, fault: str) -> None:
    worker = server.worker_pids()[0]
    script, code = MID_STREAM[fault]
    upstream.script = script
    status, body, whole = request(server, fmt)
    assert status == 200
    if fmt == "text":
        assert not whole and body == b"one two"  # cut without the chunked terminator
    else:
        assert whole
        events = events_of(fmt, body)
        error = check_event_stream(events)
        assert error["type"] == "error" and error["error"]["code"] == code
        assert answer_of(events) == "one two"
    upstream.wait_for(lambda s: s.open == 0)
    survives(server, upstream, worker)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", list(BEFORE_STREAM))
def test_fault_before_the_first_byte(server: Gunicorn, upstream: StandInServer, fmt: str, fault: str) -> None:
    worker = server.worker_pids()[0]
    script, expected_status, code = BEFORE_STREAM[fault]
    upstream.script = script
    status, body, whole = request(server, fmt)
    assert (status, whole) == (expected_status, True)
    assert json.loads(body)["error"]["code"] == code
    assert API_KEY.encode() not in body
    survives(server, upstream, worker)


def test_connection_refused(_standin: StandInServer) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
           "CHATSTREAM_MAX_RETRIES": "0"}
    with Gunicorn(env=env) as server:
        worker = server.worker_pids()[0]
        for fmt in FORMATS:
            status, body, _ = request(server, fmt)
            assert status == 502 and json.loads(body)["error"]["code"] == "upstream_unavailable"
        assert server.worker_pids() == [worker]


# fault -> what the client gets: the whole answer, ended once
ODD_BUT_WHOLE = {
    "holds the connection after [DONE]": Script(reply=REPLY, after_done="hold"),
    "keeps sending after [DONE]": Script(reply=REPLY, after_done="data"),
    "sends several choices": Script(reply=REPLY, choices=2),
    "adds fields to usage": Script(reply=REPLY, usage_extra={"cost": 0.0001, "litellm_call_id": "x"}),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", list(ODD_BUT_WHOLE))
def test_odd_upstreams_still_give_one_whole_answer(server: Gunicorn, upstream: StandInServer, fmt: str,
                                                   fault: str) -> None:
    worker = server.worker_pids()[0]
    upstream.script = ODD_BUT_WHOLE[fault]
    status, body, whole = request(server, fmt)  # read_timeout is 2 s: a wait for the upstream would show
    assert (status, whole) == (200, True)
    if fmt == "text":
        assert body.decode() == REPLY
    else:
        events = events_of(fmt, body)
        done = check_event_stream(events)
        assert answer_of(events) == REPLY and done["type"] == "done"
        assert done["usage"] == {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert stats.opened == 1
    survives(server, upstream, worker)
