"""Runs last: the fake API key appears in no log line of the whole session, ours or gunicorn's.

Every test that talks to an upstream uses API_KEY, and the stand-in quotes it back in its error
bodies the way OpenAI does, so a leak anywhere would show here. (Responses are checked where they
are made.)"""

from __future__ import annotations

from .conftest import API_KEY, SESSION_LOG
from .servers import LOGS


def test_the_key_is_in_no_log_line() -> None:
    assert SESSION_LOG.lines, "the session log recorder saw nothing"
    fragments = (API_KEY, API_KEY[-16:])
    leaks = [line for line in SESSION_LOG.lines if any(f in line for f in fragments)]
    assert not leaks, leaks[:3]
    for path in LOGS:
        text = path.read_text(errors="replace")
        assert not any(f in text for f in fragments), path
