"""Install what ships the way a user does: a fresh venv with only the ``server`` extra (no test
tools), or ``server,redis``, then the README's gunicorn line on the README's own app, in a directory
that holds that app and gunicorn.conf.py but not the package source, and one answer streamed through
it (with Redis: resumable, and read again)."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import ROOT, RedisServer, free_port, wait_for_port
from .streams import answer_of, check_event_stream, ndjson_events, post_chat


README_APP = """
from flask import Flask
from flask_chatstream import create_blueprint

app = Flask(__name__)
app.config["CHATSTREAM_SYSTEM_PROMPT"] = "You are a helpful assistant."
# Reads OPENAI_API_KEY (and OPENAI_BASE_URL, for Ollama, vLLM, LM Studio...) from the environment.
app.register_blueprint(create_blueprint(model="gpt-4o-mini"), url_prefix="/api")
"""


@pytest.mark.parametrize("extras", ["server", "server,redis"])
def test_a_clean_server_install_deploys(tmp_path: Path, upstream: StandInServer, extras: str) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # A copy of the tree, so the build leaves nothing behind in the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "node_modules", "test-artifacts", "instance",
                                                                "*.egg-info", "build", "__pycache__", "dist"))
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "OPENAI_",
                                                                          "CHATSTREAM_"))}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", f"{source}[{extras}]"], env=clean_env,
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                               text=True, env=clean_env).stdout.lower()
    assert "pytest" not in installed and "hypothesis" not in installed  # only what the extras bring
    assert ("\nredis==" in installed) == ("redis" in extras)

    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(ROOT / "gunicorn.conf.py", app_dir / "gunicorn.conf.py")
    app = README_APP
    if "redis" in extras:  # the README's fleet settings, before the blueprint is registered
        app = app.replace('app.config["CHATSTREAM_SYSTEM_PROMPT"]', 'import os\napp.config["CHATSTREAM_RESUMABLE"] = True\n'
                          'app.config["CHATSTREAM_REDIS_URL"] = os.environ["REDIS_URL"]\napp.config["CHATSTREAM_SYSTEM_PROMPT"]')
    (app_dir / "app.py").write_text(app)
    assert README_APP.strip().splitlines()[-1] in (ROOT / "README.md").read_text()  # the README's own
    upstream.script = Script(reply="deployed and streaming")
    port = free_port()
    app_env = {**clean_env, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url}
    redis_server = None
    if "redis" in extras:
        redis_server = RedisServer(tmp_path)
        app_env["REDIS_URL"] = redis_server.url
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen([str(env_dir / "bin" / "gunicorn"), "-c", "gunicorn.conf.py", "-w", "1",
                                "-b", f"127.0.0.1:{port}", "app:app"],
                               cwd=app_dir, env=app_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process, timeout=60)
        conn, response = post_chat(port, "ndjson", {"content": "deployed?"}, timeout=30)
        events = ndjson_events(response.read())
        conn.close()
        assert check_event_stream(events)["type"] == "done" and answer_of(events) == "deployed and streaming"
        if redis_server is not None:  # kept in Redis: read again, whole
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", f"/api/chat/{events[0]['stream_id']}?format=ndjson")
            again = conn.getresponse()
            assert again.status == 200 and ndjson_events(again.read()) == events
            conn.close()
    finally:
        if redis_server is not None:
            redis_server.stop()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        log.close()
    text = (tmp_path / "gunicorn.log").read_text()
    assert "Booting worker" in text and "Traceback" not in text, text[-3000:]
    where = subprocess.run([str(python), "-c", "import flask_chatstream; print(flask_chatstream.__file__)"],
                           capture_output=True, text=True, cwd=app_dir, env=clean_env).stdout
    assert where.startswith(str(env_dir)), where  # the installed package, not a source tree
