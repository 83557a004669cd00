"""The stand-in upstream: the SDK's own typed parser must accept what it sends; and the README's way
to test a host app with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import openai
import pytest
from flask import Flask

from flask_chatstream import create_blueprint
from flask_chatstream.testing import Cut, Fail, Hold, Malformed, Script, StandInServer, split_reply

from .conftest import API_KEY
from .servers import ROOT
from .snippets import file_snippet


def sdk(upstream: StandInServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=upstream.url, max_retries=0)


def test_stream_has_openais_chunk_shape(upstream: StandInServer) -> None:
    upstream.script = Script(reply="Bonjour à tous, ça va?")
    chunks = list(sdk(upstream).chat.completions.create(
        model="any", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Bonjour à tous, ça va?"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.opened, stats.finished, stats.open, stats.cancelled) == (1, 1, 0, 0)


def test_error_status_is_openai_shaped(upstream: StandInServer) -> None:
    upstream.script = Script(status=429, retry_after="2")
    with pytest.raises(openai.RateLimitError) as info:
        sdk(upstream).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    assert info.value.response.headers["retry-after"] == "2"


def test_counts_a_caller_that_leaves_even_during_a_stall(upstream: StandInServer) -> None:
    upstream.script = Script(reply="a b c d", stall_after=1)
    stream = sdk(upstream).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                   stream=True)
    next(iter(stream))
    stream.close()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)


def test_scripts_by_model_and_chunk_counts(upstream: StandInServer) -> None:
    upstream.scripts["fast"] = Script(reply="abcdefgh", chunks=4)
    stream = sdk(upstream).chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}],
                                                   stream=True)
    assert [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content] == \
        ["ab", "cd", "ef", "gh"]
    assert split_reply("one two three", None) == ["one", " two", " three"]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_faults_compose_in_the_order_given(upstream: StandInServer, api: str) -> None:
    """A gate after one word, a line that is not JSON after two, and a cut after three: the caller reads
    the first word while the stand-in holds the rest, then the second, then the SDK's parser fails on
    the bad line; no whole answer is ever sent."""
    upstream.script = Script(reply="a b c d e", faults=[Hold(after=1), Malformed(after=2), Cut(after=3)])
    client = sdk(upstream)
    stream = iter(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
                  if api == "chat" else client.responses.create(model="m", input="x", stream=True))

    def text(event: object) -> str | None:
        if api == "chat":
            choices = getattr(event, "choices", None)
            return choices[0].delta.content if choices else None
        return getattr(event, "delta", None) if getattr(event, "type", "") == "response.output_text.delta" else None

    texts: list[str] = []
    while not texts:  # the events before the first word (the role, the response's start) say nothing
        texts = [piece for piece in [text(next(stream))] if piece]
    assert texts == ["a"] and upstream.stats.open == 1  # held at the gate: nothing after the first word
    upstream.release()
    with pytest.raises(json.JSONDecodeError):
        for event in stream:
            if text(event):
                texts.append(str(text(event)))
    assert texts == ["a", " b"]
    assert upstream.wait_for(lambda s: s.open == 0).finished == 0


def test_a_scripts_fields_are_shorthand_for_its_faults() -> None:
    script = Script(cut_after=3, error_after=2, faults=[Fail(after=0)])
    assert script.all_faults() == [Cut(3), Fail(2), Fail(0)]


def test_control_api(upstream: StandInServer) -> None:
    base = upstream.url.removesuffix("/v1")
    put = urllib.request.Request(f"{base}/_standin/script", data=json.dumps({"reply": "set remotely"}).encode(),
                                 method="PUT", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(put).read()
    text = "".join(c.choices[0].delta.content or "" for c in sdk(upstream).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True) if c.choices)
    assert text == "set remotely"
    upstream.wait_for(lambda s: s.open == 0)
    stats = json.loads(urllib.request.urlopen(f"{base}/_standin/stats").read())
    assert stats["finished"] == 1 and stats["requests"] == 1


USER_APP = '''
from flask import Flask
from flask_chatstream import create_blueprint


def create_app(config=None):
    app = Flask(__name__)
    app.config.update(config or {})
    # A deployment setting that, without attach(), would win over the stand-in's shared keys.
    app.config["CHATSTREAM_CHATSTREAM_BASE_URL"] = app.config.get("REAL_PROVIDER", "https://api.openai.com/v1")
    app.register_blueprint(create_blueprint(model="gpt-4o-mini", max_retries=0), url_prefix="/api")
    return app
'''


def test_the_manuals_way_to_test_a_host_app_never_reaches_the_real_provider(tmp_path: Path) -> None:
    """The manual's test file, run with pytest as a user runs it, with a real-looking key in the shell
    and the "real provider" (another stand-in here) configured in every way that could win."""
    (tmp_path / "test_chat.py").write_text(file_snippet(ROOT / "docs" / "howto" / "testing.md", "test_chat.py"))
    with StandInServer(Script(reply="the real provider answered")) as real:
        (tmp_path / "app.py").write_text(USER_APP.replace('app.config.get("REAL_PROVIDER", "https://api.openai.com/v1")',
                                                          repr(real.url)))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATSTREAM_", "PYTEST_"))}
        env.update(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=real.url, CHATSTREAM_BASE_URL=real.url)
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_chat.py"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
        # The other shape: a module-level app (the tutorial's), with the page's conftest.py and tests.
        page = ROOT / "docs" / "howto" / "testing.md"
        (tmp_path / "myapp").mkdir()
        for name in ("app.py", "conftest.py", "test_chat.py"):
            (tmp_path / "myapp" / name).write_text(file_snippet(page, f"myapp/{name}"))
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_chat.py"],
                              cwd=tmp_path / "myapp", env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
        assert real.stats.connections == 0


def test_attach_needs_a_registered_blueprint() -> None:
    with StandInServer() as server, pytest.raises(RuntimeError, match="before app.register_blueprint"):
        server.attach(Flask(__name__))


def test_attach_makes_the_state_registration_makes(tmp_path: Path) -> None:
    """attach() builds the blueprint's state as registration does (build_state): readiness asks the stand-in
    with its key, never the app's provider with the app's key, and retries are counted."""
    from prometheus_client import REGISTRY

    def retries() -> float:
        return REGISTRY.get_sample_value("chatstream_upstream_retries_total") or 0.0

    with StandInServer(Script(reply="the real provider answered")) as real, StandInServer() as standin:
        app = Flask(__name__, instance_path=str(tmp_path))
        app.config.update(CHATSTREAM_API_KEY=API_KEY, CHATSTREAM_BASE_URL=real.url, CHATSTREAM_STATE_PATH=":memory:")
        app.register_blueprint(create_blueprint(max_retries=1), url_prefix="/api")
        standin.attach(app)
        client = app.test_client()
        ready = client.get("/api/readyz")
        assert ready.status_code == 200 and ready.json == {"status": "ready", "checks": {"upstream": "ok"}}
        standin.script = Script(status=429, retry_after="0")
        before = retries()
        assert client.post("/api/chat", json={"content": "hi"}).status_code == 429
        assert standin.stats.requests == 2 and retries() == before + 1  # the retry observer is attached too
        assert real.stats.connections == 0  # neither readiness nor a chat reached the app's provider
