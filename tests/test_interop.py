"""Against OpenAI-compatible servers this project did not write, each from PyPI in a venv of its own
(so their dependencies never mix with ours), on loopback:

- mockllm, under uvicorn: it streams an answer a character per chunk with a small lag, sends no
  usage chunk, and ends with ``[DONE]``;
- LiteLLM's proxy, on the Responses API (``api="responses"``): it re-serializes the Responses API's
  events itself (without ``event:`` lines, with fields of its own). Its ``mock_response`` cannot
  stream ``/v1/responses`` (LiteLLM 1.108.7 fails with "'ResponsesAPIResponse' object has no
  attribute '__aiter__'"), so the stand-in is its model, behind it.

(llmock has no stable CLI.)"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import Gunicorn, free_port, wait_for_port
from .streams import answer_of, check_event_stream, events_of, post_chat, read_until

pytestmark = [pytest.mark.install, pytest.mark.server]

ANSWER = "Streamed by a server this project did not write."
RESPONSES = f"""
responses: {{}}
defaults:
  unknown_response: "{ANSWER}"
settings:
  lag_enabled: true
  lag_factor: 100
"""


def venv_with(tmp: Path, requirement: str) -> Path:
    """A venv of its own in ``tmp`` with ``requirement`` installed from PyPI: its ``bin``."""
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    install = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", requirement],
                             env=CLEAN, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return env_dir / "bin"


CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}


def serve(command: list[str], tmp: Path, env: dict[str, str]) -> Iterator[str]:
    """Run a server (``{port}`` in ``command`` becomes a free port) until the caller is done; its
    base URL. Its output goes to ``tmp/server.log``."""
    port = free_port()
    with (tmp / "server.log").open("wb") as log:
        process = subprocess.Popen([part.replace("{port}", str(port)) for part in command], cwd=tmp,
                                   env={**CLEAN, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, process, timeout=120)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def mockllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("mockllm")
    python = str(venv_with(tmp, "mockllm==0.0.8") / "python")
    (tmp / "responses.yml").write_text(RESPONSES)
    yield from serve([python, "-m", "uvicorn", "mockllm.server:app", "--host", "127.0.0.1", "--port", "{port}"], tmp,
                     {"MOCKLLM_RESPONSES_FILE": str(tmp / "responses.yml")})


@pytest.fixture(scope="module")
def server(mockllm: str) -> Iterator[Gunicorn]:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": mockllm, "CHATSTREAM_MAX_RETRIES": "0"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_streams_from_mockllm(server: Gunicorn, fmt: str) -> None:
    conn, response = post_chat(server.port, fmt, {"content": "interop, please"}, timeout=30)
    assert response.status == 200
    reads = []
    while piece := response.read1(65536):
        reads.append(piece)
    conn.close()
    body = b"".join(reads)
    assert len(reads) > 5  # it arrived piece by piece, as the upstream sent it
    if fmt == "text":
        assert body.decode() == ANSWER
    else:
        events = events_of(fmt, body)
        done = check_event_stream(events)
        assert answer_of(events) == ANSWER
        assert (done["type"], done["finish_reason"]) == ("done", "stop")
        usage = done["usage"]  # mockllm sends none: the counts are ours (its log line says usage=estimated)
        assert usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert "usage=estimated" in server.wait_for_log("usage=estimated")


def test_several_answers_in_a_row(server: Gunicorn) -> None:
    for _ in range(3):
        conn, response = post_chat(server.port, "ndjson", timeout=30)
        assert check_event_stream(events_of("ndjson", response.read()))["type"] == "done"
        conn.close()
    log = server.log()
    assert log.count("outcome=done") >= 3


# ---- LiteLLM's proxy, on the Responses API ----------------------------------------------------------

LITELLM = "litellm[proxy]==1.108.7"
MASTER_KEY = "sk-interop-0123456789abcdef0123456789abcdef"
REPLY = "one two three four five six seven"


@pytest.fixture(scope="module")
def litellm(tmp_path_factory: pytest.TempPathFactory, _standin: StandInServer) -> Iterator[str]:
    """LiteLLM's proxy with one model, the stand-in behind it; it keeps its cost map local and its
    telemetry off, so it calls nothing but the stand-in."""
    tmp = tmp_path_factory.mktemp("litellm")
    bin_dir = venv_with(tmp, LITELLM)
    (tmp / "config.yaml").write_text(
        "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
        f"      api_key: sk-stand-in\n      api_base: {_standin.url}\nlitellm_settings:\n  telemetry: false\n")
    yield from serve([str(bin_dir / "litellm"), "--config", str(tmp / "config.yaml"), "--host", "127.0.0.1",
                      "--port", "{port}"], tmp, {"LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})


@pytest.fixture(scope="module")
def through_litellm(litellm: str) -> Iterator[Gunicorn]:
    env = {"OPENAI_API_KEY": MASTER_KEY, "OPENAI_BASE_URL": litellm, "CHATSTREAM_MAX_RETRIES": "0",
           "CHATSTREAM_API": "responses"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn
    log = gunicorn.log()
    assert "Traceback" not in log and MASTER_KEY not in log, log


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse", "ui"])
def test_the_responses_api_through_litellms_proxy(through_litellm: Gunicorn, upstream: StandInServer,
                                                  fmt: str) -> None:
    upstream.script = Script(reply=REPLY, hold_after=3)  # held after three words until released
    conn, response = post_chat(through_litellm.port, fmt, {"content": "through LiteLLM"}, timeout=60)
    assert response.status == 200
    first = read_until(response, b"three")
    assert (upstream.stats.open, upstream.stats.finished) == (1, 0), "the model had finished before the first words"
    upstream.release()
    body = first + response.read()
    conn.close()
    assert "input" in upstream.stats.bodies[-1]  # LiteLLM asked the stand-in's /v1/responses
    if fmt == "text":
        assert body.decode() == REPLY
    elif fmt == "ui":
        assert b'"type":"finish"' in body and body.endswith(b"data: [DONE]\n\n")
        assert "".join(json.loads(line[6:])["delta"] for line in body.decode().split("\n")
                       if line.startswith('data: {"type":"text-delta"')) == REPLY
    else:
        events = events_of(fmt, body)
        done = check_event_stream(events)
        assert answer_of(events) == REPLY and done["finish_reason"] == "stop"
        assert events[0]["id"].startswith("resp_") and done["usage"]["completion_tokens"] == 7
