"""Install what ships the way a user does: the README's Install lines, run as they stand, in a fresh venv
with no test tools, against a wheel built from this tree (pip finds it as it would find it on PyPI);
then one answer streamed through each app: the README's minimal app (with Redis: resumable, and read
again), and the example app from a copy of the repository."""

from __future__ import annotations

import http.client
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .console import Terminal, follow, sh_lines
from .servers import ROOT, RedisServer, free_port, wait_for_port
from .snippets import file_snippet
from .streams import answer_of, check_event_stream, ndjson_events, post_chat

pytestmark = [pytest.mark.install, pytest.mark.redis, pytest.mark.node]

COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "node_modules", "test-artifacts", "instance", "*.egg-info",
                                     "build", "__pycache__", "dist")


def readme_app() -> str:
    """The app at the top of the README, as it stands there."""
    readme = (ROOT / "README.md").read_text()
    return re.search(r"```python\n(from flask import Flask\n.*?)```", readme, re.S).group(1)  # type: ignore[union-attr]


def readme_section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def install_lines() -> list[str]:
    """Every command line of the README's Install section, comments stripped."""
    return sh_lines(readme_section("Install"))


def line(start: str) -> list[str]:
    [found] = [each for each in install_lines() if each.startswith(start)]
    return shlex.split(found)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this tree, built from a copy (the build leaves nothing behind in the checkout)."""
    where = tmp_path_factory.mktemp("wheels")
    source = where / "source"
    shutil.copytree(ROOT, source, ignore=COPY_IGNORE)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return where


class Venv:
    """A fresh virtual environment whose ``pip`` and ``gunicorn`` come first on PATH, as after activating it."""

    def __init__(self, path: Path, wheels: Path) -> None:
        venv.create(path, with_pip=True)
        self.bin = path / "bin"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PYTHON", "VIRTUAL_ENV", "OPENAI_", "CHATSTREAM_", "PIP_FIND_LINKS"))}
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["VIRTUAL_ENV"] = str(path)
        # pip finds flask-chatstream here, as it would on the index once it is released.
        self.env["PIP_FIND_LINKS"] = " ".join(filter(None, [os.environ.get("PIP_FIND_LINKS"), str(wheels)]))

    def run(self, argv: list[str], cwd: Path) -> None:
        done = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, " ".join(argv) + "\n" + done.stdout[-3000:] + done.stderr[-3000:]
        # Nothing it prints is a warning (setuptools' about a package left out, say); this machine's pip
        # configuration names local indexes that may be absent, which pip notes and which is not ours.
        output = [line for line in (done.stdout + done.stderr).splitlines() if "is ignored: it is neither" not in line]
        assert not [line for line in output if "warning" in line.lower()], "\n".join(output)[-3000:]

    def installed(self) -> str:
        return subprocess.run([str(self.bin / "python"), "-m", "pip", "list", "--format=freeze"], env=self.env,
                              capture_output=True, text=True).stdout.lower()


@contextmanager
def serve(env: Venv, argv: list[str], cwd: Path, extra_env: dict[str, str], log_path: Path) -> Iterator[int]:
    """Run the README's gunicorn line as it stands (port and one worker from the environment it reads)."""
    port = free_port()
    log = log_path.open("wb")
    process = subprocess.Popen(argv, cwd=cwd, env={**env.env, **extra_env, "PORT": str(port), "WEB_CONCURRENCY": "1"},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process, timeout=60)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        log.close()
    text = log_path.read_text()
    assert "Booting worker" in text and "Traceback" not in text, text[-3000:]
    assert "Warning" not in text, text[-3000:]  # such as gevent's MonkeyPatchWarning: a start is quiet


@pytest.mark.parametrize("extras", ["server", "server,redis"])
def test_the_readme_install_lines_deploy_the_readme_app(tmp_path: Path, upstream: StandInServer, wheels: Path,
                                                        extras: str) -> None:
    env = Venv(tmp_path / "venv", wheels)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    env.run(line(f'pip install "flask-chatstream[{extras}]"'), cwd=app_dir)
    installed = env.installed()
    assert "pytest" not in installed and "hypothesis" not in installed  # only what the extras bring
    assert ("\nredis==" in installed) == ("redis" in extras)

    app = readme_app()
    if "redis" in extras:  # the README's fleet settings, before the blueprint is registered
        app = app.replace('app.config["CHATSTREAM_SYSTEM_PROMPT"]', 'import os\napp.config["CHATSTREAM_RESUMABLE"] = True\n'
                          'app.config["CHATSTREAM_REDIS_URL"] = os.environ["REDIS_URL"]\napp.config["CHATSTREAM_SYSTEM_PROMPT"]')
    (app_dir / "app.py").write_text(app)
    upstream.script = Script(reply="deployed and streaming")
    app_env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url}
    redis_server = RedisServer(tmp_path) if "redis" in extras else None
    if redis_server is not None:
        app_env["REDIS_URL"] = redis_server.url
    try:
        with serve(env, line("gunicorn -c python:flask_chatstream.gunicorn app:app"), app_dir, app_env,
                   tmp_path / "gunicorn.log") as port:
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
    # The stream's line shows in gunicorn's log with no logging set up by the app: Flask's way.
    log = (tmp_path / "gunicorn.log").read_text()
    assert re.search(r"stream id=\S+ outcome=done format=ndjson", log) and "stream id=warm-up" not in log
    where = subprocess.run([str(env.bin / "python"), "-c", "import flask_chatstream; print(flask_chatstream.__file__)"],
                           capture_output=True, text=True, cwd=app_dir, env=env.env).stdout
    assert where.startswith(str(tmp_path / "venv")), where  # the installed package, not a source tree


def test_the_readme_install_lines_run_the_example_app_from_a_clone(tmp_path: Path, wheels: Path) -> None:
    env = Venv(tmp_path / "venv", wheels)
    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, ignore=COPY_IGNORE)
    env.run(line('pip install ".[server,example]"'), cwd=clone)
    assert "\nsqlalchemy==" in env.installed()
    # No OPENAI_API_KEY: the offline demo model, inside the app.
    with serve(env, line("gunicorn -c python:flask_chatstream.gunicorn example_app:app"), clone, {},
               tmp_path / "gunicorn.log") as port:
        conn, response = post_chat(port, "ndjson", {"content": "Hello?", "conversation_id": "install-test"}, timeout=30)
        events = ndjson_events(response.read())
        conn.close()
        assert check_event_stream(events)["type"] == "done" and "offline demo" in answer_of(events)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/conversations")
        listed = conn.getresponse()
        assert listed.status == 200 and b"install-test" in listed.read()
        conn.close()


def test_the_readme_minimal_app_runs_offline_from_a_clone_as_shown(tmp_path: Path, wheels: Path) -> None:
    """Installed from a clone, the README's minimal app answers through the stand-in, printing what the
    README shows; each line as it stands (only the ports are this test's own)."""
    env = Venv(tmp_path / "venv", wheels)
    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, ignore=COPY_IGNORE)
    env.run(line('pip install ".[server]"'), cwd=clone)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(readme_app())
    section = readme_section("The minimal app")
    standin_port, app_port = free_port(), free_port()
    ports = {"8001": str(standin_port), "8000": str(app_port)}

    def own_ports(text: str) -> str:
        return re.sub(r"\b(8000|8001)\b", lambda found: ports[found.group(1)], text)

    with Terminal(app_dir, {**env.env, "PORT": str(app_port)}, tmp_path) as terminal:
        started = follow(terminal, section, {"python -m flask_chatstream.testing": standin_port,
                                             "gunicorn": app_port}, own_ports)
    assert len(started) == 2
    for log in started:
        text = log.read_text()
        assert "Traceback" not in text and "Warning" not in text, text[-3000:]


def test_the_tutorials_flask_side_runs_as_written(tmp_path: Path, wheels: Path) -> None:
    """The tutorial's first part, line by line in a clean folder: its venv, its install (from a wheel of
    this tree, standing in for the index), its app.py, the stand-in, check, gunicorn and both curls."""
    tutorial = (ROOT / "docs" / "tutorial.md").read_text()
    part = tutorial.split("\n## 1. The Flask side\n", 1)[1].split("\n## 2.", 1)[0]
    standin_port, app_port = free_port(), free_port()
    ports = {"8001": str(standin_port), "8000": str(app_port)}

    def own_ports(text: str) -> str:
        return re.sub(r"\b(8000|8001)\b", lambda found: ports[found.group(1)], text)

    env = {k: v for k, v in Venv(tmp_path / "unused", wheels).env.items() if k not in ("VIRTUAL_ENV",)}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(tmp_path)))
    env["PORT"] = str(app_port)
    before, after = part.split("The whole API is one blueprint:", 1)
    with Terminal(tmp_path, env, tmp_path) as terminal:
        follow(terminal, before, {})
        directory, _ = terminal.state()
        (Path(directory) / "app.py").write_text(file_snippet(ROOT / "docs" / "tutorial.md", "app.py"))
        started = follow(terminal, after, {"python -m flask_chatstream.testing": standin_port, "gunicorn": app_port},
                         own_ports)
    assert Path(directory) == tmp_path / "chat" and len(started) == 2
    for log in started:
        text = log.read_text()
        assert "Traceback" not in text and "Warning" not in text, text[-3000:]
