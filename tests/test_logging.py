"""One structured line per stream: id, outcome, chunks, tokens. Never the prompt or the key."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY

LINE = re.compile(r"stream id=(\S+) outcome=(\S+) format=(\S+) chunks=(\d+) steps=\d+ duration_ms=(\d+) "
                  r"finish_reason=(\S+) prompt_tokens=(\S+) completion_tokens=(\S+) usage=(\S+)")


def stream_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    return [m for r in caplog.records if r.name == "flask_chatstream" and (m := LINE.fullmatch(r.getMessage()))]


def test_one_line_per_stream(client: FlaskClient, upstream: StandInServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="flask_chatstream")
    upstream.script = Script(reply="a b c", delay=0.05)
    b"".join(client.post("/api/chat?format=ndjson", json={"content": "my secret prompt"}, buffered=False).response)
    left = client.post("/api/chat", json={"content": "x"}, buffered=False)
    next(iter(left.response))
    left.close()
    upstream.script = Script(reply="a b c", error_after=1)
    b"".join(client.post("/api/chat?format=sse", json={"content": "x"}, buffered=False).response)

    done, gone, failed = stream_lines(caplog)
    assert done.group(1).startswith("chatcmpl-")
    assert done.group(2, 3, 4, 6, 7, 8) == ("done", "ndjson", "6", "stop", "3", "3")
    assert gone.group(2, 3, 9) == ("client_left", "text", "estimated")  # counted here: the upstream did not
    assert failed.group(2, 3) == ("upstream_error", "sse")
    text = caplog.text
    assert "my secret prompt" not in text and API_KEY not in text
