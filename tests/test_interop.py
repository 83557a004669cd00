"""Against an OpenAI-compatible server this project did not write: mockllm, from PyPI, in a venv of
its own (so its dependencies never mix with ours), under uvicorn on loopback. It streams an answer a
character per chunk with a small lag, sends no usage chunk, and ends with ``[DONE]``.

(LiteLLM's proxy needs far more than PyPI gives a clean machine, and llmock has no stable CLI;
mockllm's streaming path needs nothing at run time.)"""

from __future__ import annotations

import os
import subprocess
import venv
from collections.abc import Iterator

import pytest

from .conftest import API_KEY
from .servers import Gunicorn, free_port, wait_for_port
from .streams import answer_of, check_event_stream, events_of, post_chat

ANSWER = "Streamed by a server this project did not write."
RESPONSES = f"""
responses: {{}}
defaults:
  unknown_response: "{ANSWER}"
settings:
  lag_enabled: true
  lag_factor: 100
"""


@pytest.fixture(scope="module")
def mockllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("mockllm")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    install = subprocess.run([python, "-m", "pip", "install", "-q", "mockllm==0.0.8"], env=clean,
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    (tmp / "responses.yml").write_text(RESPONSES)
    port = free_port()
    log = (tmp / "mockllm.log").open("wb")
    process = subprocess.Popen([python, "-m", "uvicorn", "mockllm.server:app", "--host", "127.0.0.1", "--port",
                                str(port)], cwd=tmp, env={**clean, "MOCKLLM_RESPONSES_FILE": str(tmp / "responses.yml")},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process, timeout=60)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def server(mockllm: str) -> Iterator[Gunicorn]:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": mockllm, "CHATSTREAM_MAX_RETRIES": "0"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn
    assert "Traceback" not in gunicorn.log()


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
        assert (done["type"], done["finish_reason"], done["usage"]) == ("done", "stop", None)


def test_several_answers_in_a_row(server: Gunicorn) -> None:
    for _ in range(3):
        conn, response = post_chat(server.port, "ndjson", timeout=30)
        assert check_event_stream(events_of("ndjson", response.read()))["type"] == "done"
        conn.close()
    log = server.log()
    assert log.count("outcome=done") >= 3
