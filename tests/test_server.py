"""Where the WSGI server cannot do its part, one warning says so; the gevent adjustments take effect
however the app was loaded, or a warning says they did not."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from flask_chatstream._chat import ChatRequest
from flask_chatstream._config import Settings
from flask_chatstream._stream import server as _server
from flask_chatstream._upstream.client import Upstream
from flask_chatstream.testing import StandInServer

from .conftest import API_KEY, AppFactory
from .servers import ROOT, Gunicorn
from .streams import post_chat

pytestmark = pytest.mark.server


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_a_server_without_the_client_socket_gets_one_warning(make_app: AppFactory, upstream: StandInServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    _server._warned.clear()
    server = make_server("127.0.0.1", 0, make_app(), handler_class=_Quiet)  # wsgiref: no socket in environ
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(2):
            request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/api/chat",
                                             data=b'{"content": "hi"}', headers={"Content-Type": "application/json"})
            assert urllib.request.urlopen(request, timeout=30).read()
    finally:
        server.shutdown()
        server.server_close()
    warnings = [r for r in caplog.records if "does not expose the client's socket" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


def test_gunicorns_sync_worker_gets_a_warning(_standin: StandInServer) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "CHATSTREAM_MAX_RETRIES": "0"}
    with Gunicorn(env=env, extra_args=["-k", "sync"]) as server:
        conn, response = post_chat(server.port, "text", timeout=30)
        assert response.status == 200 and response.read()
        conn.close()
        log = server.log()
    assert "gunicorn is running a sync worker" in log


def test_an_unpatched_gevent_server_gets_a_warning(upstream: StandInServer) -> None:
    script = f"""
import logging
from gevent.pywsgi import WSGIServer
from flask import Flask
from flask_chatstream import create_blueprint
logging.basicConfig(level=logging.WARNING)
app = Flask("unpatched")
app.register_blueprint(create_blueprint(api_key={API_KEY!r}, base_url={upstream.url!r}), url_prefix="/api")
server = WSGIServer(("127.0.0.1", 0), app, log=None)
server.start()
print(server.server_port, flush=True)
server.serve_forever()
"""
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        conn, response = post_chat(port, "text", timeout=30)
        assert response.status == 200 and response.read()
        conn.close()
    finally:
        process.kill()
        _, stderr = process.communicate(timeout=30)
    assert "gevent has not patched the socket module" in stderr


def test_the_default_transport_reads_the_body_without_a_timer(upstream: StandInServer) -> None:
    """Under gevent a socket with a timeout starts a timer on every blocking read; the watchdog enforces
    the read timeout instead, so once the stream is open its socket has none."""
    settings = Settings(api_key=API_KEY, base_url=upstream.url, max_retries=0)
    stream = Upstream(settings).open(ChatRequest(messages=[{"role": "user", "content": "hi"}], model="m",
                                                 max_tokens=5))
    assert stream._socket.gettimeout() is None
    b"".join(stream)
    stream.close()


def test_the_httpcore_adjustment_takes_effect_with_preload_app(_standin: StandInServer) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "CHATSTREAM_ADJUST_HTTPCORE": "1"}
    with Gunicorn("tests.custom_client_app:app", env=env, extra_args=["--preload"]) as server:
        conn, response = post_chat(server.port, "text", timeout=30)
        assert response.status == 200 and response.read()
        conn.close()
        log = server.log()
    assert "idle-connection check uses the OS's poll" in log


def test_httpcore_is_left_alone_unless_the_host_asks(_standin: StandInServer) -> None:
    """The adjustment changes httpcore for the whole process, the host's own clients too: opt-in."""
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url}
    with Gunicorn("tests.custom_client_app:app", env=env) as server:
        for _ in range(2):
            conn, response = post_chat(server.port, "text", timeout=30)
            assert response.status == 200 and response.read()
            conn.close()
        log = server.log()
    assert "idle-connection check uses the OS's poll" not in log and "fair locks" not in log


def test_a_changed_httpcore_makes_a_warning_not_a_failure() -> None:
    script = """
import logging, types
from gevent import monkey
monkey.patch_all()
logging.basicConfig(level=logging.INFO)
import flask_chatstream
from flask_chatstream import _gevent
_gevent.adjust_httpcore(types.ModuleType("httpx_from_the_future"))
print("still running")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "still running" in result.stdout, result.stderr[-2000:]
    assert "could not adjust httpcore_from_the_future for gevent" in result.stderr


def test_httpcore_http2_connections_take_turns_reading_under_gevent() -> None:
    """httpcore's HTTP/2 reader holds the lock across a blocking read, releases it, and takes it
    again at once. With gevent's lock, a stream waiting its turn never gets one while another
    stream's reader loops like that; with the fair lock it goes next."""
    script = """
from gevent import monkey
monkey.patch_all()
import threading, gevent
from gevent.event import Event
from flask_chatstream._gevent import FairLock

def order(lock):
    turns, holding, queued = [], Event(), Event()
    def silent_stream():
        for i in range(3):
            with lock:
                turns.append("silent")
                if i == 0:
                    holding.set()
                    queued.wait()  # a socket read that waits, while the other stream queues
                else:
                    gevent.sleep(0)
    def waiting_stream():
        holding.wait()
        queued.set()
        with lock:
            turns.append("waiting")
    gevent.joinall([gevent.spawn(silent_stream), gevent.spawn(waiting_stream)], raise_error=True)
    return turns

print(order(threading.Lock()))
print(order(FairLock()))

lock = FairLock()
lock.acquire()
assert lock.acquire(timeout=0.01) is False and lock.acquire(blocking=False) is False
cut = gevent.spawn(lock.acquire)
gevent.sleep(0)  # it queues
cut.kill()  # a waiter that gives up leaves the line
lock.release()
assert lock.acquire(blocking=False) is True
lock.release()
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    unfair, fair, ok = result.stdout.splitlines()
    assert unfair == str(["silent", "silent", "silent", "waiting"])  # what the fair lock is for
    assert fair == str(["silent", "waiting", "silent", "silent"])
    assert ok == "ok"
