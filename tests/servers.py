"""Real servers in subprocesses, on 127.0.0.1, always cleaned up."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .conftest import API_KEY

if TYPE_CHECKING:
    from flask_chatstream.testing import StandInServer, Stats

ROOT = Path(__file__).resolve().parent.parent
LOGS: list[Path] = []
"""Every server log this test session wrote, for the leak check at its end."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stand_in_env(url: str, *, retries: int = 0, **settings: str) -> dict[str, str]:
    """A server's environment for the stand-in at ``url``: the test key, the base URL, ``retries`` (none by
    default: a test sees the upstream's first answer), and ``CHATSTREAM_<NAME>`` for each setting given."""
    return {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": url, "CHATSTREAM_MAX_RETRIES": str(retries),
            **{f"CHATSTREAM_{name.upper()}": value for name, value in settings.items()}}


STOP_ON_LEAVE = {"CHATSTREAM_ON_CLIENT_LEAVE": "stop"}
"""The library's default. The example app finishes answers for clients that left (Stop ends them);
tests of what the relay does when its client leaves ask for the library's behaviour with this."""


class Gunicorn:
    """``gunicorn -c python:flask_chatstream.gunicorn`` on gevent workers, as the README runs it."""

    def __init__(self, app: str = "example_app:app", *, env: dict[str, str], workers: int | None = 1,
                 extra_args: list[str] | None = None) -> None:
        self.secrets = [value for name, value in env.items() if name.endswith("_KEY") and len(value) >= 8]
        """What the log must never show, whole or in part: the keys it was given."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = ROOT / "test-artifacts" / f"gunicorn-{self.port}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        LOGS.append(self.log_path)
        self._log = self.log_path.open("wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHATSTREAM_"))}
        full_env.setdefault("GRACEFUL_TIMEOUT", "3")
        # The example app keeps conversations in a database: a fresh SQLite file for each server.
        database = self.log_path.with_suffix(".db")
        database.unlink(missing_ok=True)
        full_env.setdefault("CHAT_DATABASE_URL", f"sqlite:///{database}")
        # What the workers of this server share (stops, resumes, caps): a file of its own.
        state = self.log_path.with_suffix(".state.sqlite3")
        for stale in (state, state.with_name(state.name + "-wal"), state.with_name(state.name + "-shm")):
            stale.unlink(missing_ok=True)
        full_env.setdefault("CHATSTREAM_STATE_PATH", str(state))
        full_env.update(env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:flask_chatstream.gunicorn",
             *(["-w", str(workers)] if workers else []),
             "-b", f"127.0.0.1:{self.port}", *(extra_args or []), app],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for_port(self.port, self.process)
            # The master listens before it forks: wait for the workers too.
            deadline = time.monotonic() + 60
            while len(self.worker_pids()) < (workers or 1):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"gunicorn has no worker: {self.log()[-2000:]}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        """The log once ``text`` is in it: a line is written when its stream has ended, a moment after
        the client or the upstream could see it end."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            assert time.monotonic() < deadline, f"{text!r} not in the log: {log[-2000:]}"
            time.sleep(0.02)
        return log

    def barrier(self, upstream: StandInServer, condition: Callable[[Stats], bool], timeout: float = 120.0,
                explain: Callable[[], str] = str) -> Stats:
        """Wait until the stand-in's counters meet ``condition`` (every stream has reached the model,
        say); if they never do, fail saying what the stand-in counted, what ``explain`` says (what the
        clients got) and how the server's log ends, not only that a clock ran out. The bound is for a
        broken or a very busy machine; a barrier met returns at once."""
        try:
            return upstream.wait_for(condition, timeout=timeout)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; {explain()}; workers {self.worker_pids()}; the server's log ends: "
                                 f"{self.log()[-2500:]}") from None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:  # the workers too, whatever state the master is in
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self._log.close()

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.stop()
        if kind is None:
            self.check_log()

    def check_log(self) -> None:
        """Every server's one leak check, as it stops: its log holds no key it was given (nor the first 12
        characters of one, as a provider quotes it back), no traceback, no request gunicorn failed."""
        log = self.log()
        for secret in self.secrets:
            assert secret not in log and secret[:12] not in log, "a key in the server's log"
        assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]


def run_node_tests(command: list[str], *, cwd: Path, server: Gunicorn, standin_url: str) -> str:
    """Run a node test command against the servers; fail with its output if it fails."""
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=300,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "CI": "true", "NO_COLOR": "1",
             "CHATSTREAM_SERVER": server.url, "STANDIN_CONTROL": standin_url.removesuffix("/v1")},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    return output


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx:
    """Debian's nginx on 127.0.0.1, serving one ``server`` block (``site``), in ``tmp``."""

    def __init__(self, site: str, tmp: Path, *, access_log: str = "off") -> None:
        assert Path(NGINX).exists(), "nginx is required: apt-get install nginx (make test does)"
        self.access_log = tmp / "access.log"
        log = "off" if access_log == "off" else f"{self.access_log} {access_log}"
        formats = "" if access_log == "off" else f"log_format {access_log} '$connection $server_protocol $status';"
        (tmp / "site.conf").write_text(site)
        (tmp / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 1024; }}
http {{
    {formats}
    access_log {log};
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/site.conf;
}}
""")
        self.process = subprocess.Popen([NGINX, "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e",
                                         str(tmp / "error.log")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, port: int) -> None:
        try:
            wait_for_port(port, self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """Debian's redis-server on 127.0.0.1, in memory only; ``stop`` and ``start`` again on the same port."""

    def __init__(self, tmp: Path) -> None:
        assert Path(REDIS).exists(), "redis-server is required: apt-get install redis-server (make test does)"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self._tmp), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for_port(self.port, self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target`` (a port, which may change between connections)
    that can cut every connection through it at once, as a phone switching networks does to a browser.
    ``requests`` holds the request line of every HTTP request that went through it."""

    _REQUEST_LINE = re.compile(rb"^(GET|POST|PUT|DELETE|HEAD|OPTIONS) (\S+) HTTP/1\.[01]\r\n")

    def __init__(self, target: int) -> None:
        self.target = target
        self.requests: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Reset every open connection (the client sees a network error mid-read); new ones go through."""
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                # Shut down, not just closed: a close does not end a socket another thread is reading.
                # The reading pump then closes it, and without lingering, which resets the connection.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread, which close alone does not
        self._listener.close()
        self.cut()

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and (line := self._REQUEST_LINE.match(data)):
                    self.requests.append(f"{line[1].decode()} {line[2].decode()}")
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # ends the other direction's pump, which closes its own
            with self._lock:
                self._sockets.discard(source)
            source.close()


def read_message(sock: socket.socket, buffer: bytes = b"") -> tuple[bytes | None, bytes, bytes]:
    """One HTTP/1.1 message off a socket, after what ``buffer`` already holds: its head (None if the
    peer closed before the head was whole), its ``Content-Length`` body (shorter if the peer closed
    first), and whatever came after it."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            return None, buffer, b""
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length: *(\d+)", head)
    length = int(found[1]) if found else 0
    while len(rest) < length and (data := sock.recv(65536)):
        rest += data
    return head, rest[:length], rest[length:]


class RawUpstream:
    """An upstream on a bare socket, for what no well-behaved server sends: each request (head and
    ``Content-Length`` body read) is answered by ``respond(sock, n)``, n counting from 0, which writes
    whatever it likes and returns whether the connection stays open for the next request.
    ``connections`` and ``requests`` count what arrived; every socket is closed on exit."""

    def __init__(self, respond: Callable[[socket.socket, int], bool]) -> None:
        self.respond = respond
        self.connections = 0
        self.requests = 0
        self.hung_up = 0
        """Requests whose caller closed the connection while ``respond`` was still writing."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> RawUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._sockets.add(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                head, _, buffer = read_message(sock, buffer)
                if head is None:
                    return
                with self._lock:
                    n = self.requests
                    self.requests += 1
                try:
                    if not self.respond(sock, n):
                        return
                except OSError:
                    with self._lock:
                        self.hung_up += 1
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._sockets.discard(sock)
            sock.close()


class Tinyproxy:
    """Debian's tinyproxy on 127.0.0.1: the forward proxy a company network makes every request go
    through, plain (``GET http://...``) and tunnelled (``CONNECT host:port``). ``requests()`` lists
    what it carried, from its own log; ``credentials`` (``"user:password"``) makes it ask for them."""

    def __init__(self, directory: Path, credentials: str | None = None) -> None:
        binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"  # missing: the test fails, never skips
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"tinyproxy-{self.port}.log"
        config = directory / f"tinyproxy-{self.port}.conf"
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 600", f'LogFile "{self.log_path}"',
                 "LogLevel Info", "MaxClients 2000", "Allow 127.0.0.1"]
        if credentials:
            lines.append("BasicAuth " + credentials.replace(":", " ", 1))
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen([binary, "-d", "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port(self.port, self.process)
        except BaseException:
            self.stop()
            raise

    def requests(self) -> list[str]:
        """The request line of every request it carried: ``POST http://...`` or ``CONNECT host:port``."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return re.findall(r"Request \(file descriptor \d+\): (\S+ \S+) HTTP/1\.[01]", text)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> Tinyproxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
