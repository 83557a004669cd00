"""``flask chatstream check``, run as a user runs it: the flask command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY

APP = """
from flask import Flask
from flask_chatstream import create_blueprint

app = Flask(__name__)
app.config["CHATSTREAM_REDIS_URL"] = "redis://:hunter2@127.0.0.1:1/0"
app.register_blueprint(create_blueprint(model="stand-in"), url_prefix="/api")
app.register_blueprint(create_blueprint("other", model="not-served"), url_prefix="/other")
"""


def flask(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHATSTREAM_", "FLASK_"))}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_check_prints_masked_settings_and_reaches_the_upstream(tmp_path: Path, upstream: StandInServer) -> None:
    (tmp_path / "app.py").write_text(APP)
    upstream.script = Script(reply="OK")
    done = flask(["chatstream", "check", "--send"], tmp_path, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "[chatstream]" in out and "[other]" in out
    assert "api_key = '(set)'" in out and "redis_url = 'redis://***@127.0.0.1:1/0'" in out
    assert API_KEY not in out + done.stderr and "hunter2" not in out + done.stderr
    assert f"upstream: {upstream.url} answers, 1 models; 'stand-in' is listed" in out
    assert "'not-served' is NOT listed. Chats that ask for it fail if the upstream does not serve it" in out
    assert out.count("answer: 'OK'") == 2
    assert upstream.stats.requests == 2


def test_check_fails_with_the_reason_when_the_upstream_refuses(tmp_path: Path, upstream: StandInServer) -> None:
    (tmp_path / "app.py").write_text(APP)
    upstream.script = Script(status=401)
    done = flask(["chatstream", "check", "--send"], tmp_path, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url)
    assert done.returncode == 1
    assert "failed: upstream_auth:" in done.stderr, done.stdout + done.stderr


def test_check_on_an_unreachable_upstream_and_without_a_blueprint(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    done = flask(["chatstream", "check"], tmp_path, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL="http://127.0.0.1:1/v1")
    assert done.returncode == 1 and "failed: upstream_unavailable" in done.stderr, done.stdout + done.stderr
    (tmp_path / "app.py").write_text("from flask import Flask\nfrom flask_chatstream import create_blueprint\n"
                                     "app = Flask(__name__)\n")
    done = flask(["chatstream", "check"], tmp_path)
    assert done.returncode != 0 and "No such command 'chatstream'" in done.stderr


def test_check_without_a_key_says_so_in_one_line(tmp_path: Path) -> None:
    """The app fails at import (no key): Flask's command line shows our sentence, not a traceback."""
    (tmp_path / "app.py").write_text(APP)
    done = flask(["chatstream", "check"], tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("Error: flask_chatstream has no API key for the model provider. Did you forget to "
                                  "set OPENAI_API_KEY"), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_check_shows_no_secret_on_any_line(tmp_path: Path, upstream: StandInServer) -> None:
    (tmp_path / "app.py").write_text(APP)
    with_password = upstream.url.replace("http://", "http://gateway-user:gateway-secret@")
    done = flask(["chatstream", "check"], tmp_path, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=with_password)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "upstream: http://***@127.0.0.1:" in out, out
    assert "gateway-secret" not in out and "gateway-user" not in out and API_KEY not in out
