"""Fixtures: the stand-in upstream, an app factory, a test client; and small helpers the tests share.

Every test talks to the real openai client over loopback HTTP; nothing is mocked.
"""

from __future__ import annotations

import logging
import os
import resource
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, Page, sync_playwright

from flask_chatstream import ChatBlueprint, ChatResult, create_blueprint
from flask_chatstream.testing import Script, StandInServer

# Recognisable, so a leak is easy to find in any output.
API_KEY = "sk-test-LEAKCHECK-0123456789abcdef"

# tiktoken's files (make tokenizers), for the usage estimates here and in every server a test starts.
TIKTOKEN_CACHE = os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(__file__).parent.parent / ".cache" / "tiktoken"))


def pytest_sessionstart(session: pytest.Session) -> None:
    from flask_chatstream._usage.tokens import FILES, cache_path

    missing = [name for name in FILES if not os.path.exists(cache_path(name))]
    if missing:
        pytest.exit(f"tiktoken's {', '.join(missing)} is not in {TIKTOKEN_CACHE}: run `make tokenizers` "
                    "(make test and make check do).", returncode=4)


@pytest.fixture(scope="session")
def _standin() -> Iterator[StandInServer]:
    with StandInServer() as server:
        yield server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def upstream(_standin: StandInServer, request: pytest.FixtureRequest) -> Iterator[StandInServer]:
    """The stand-in model, reset for each test; set ``upstream.script`` to change its behaviour."""
    _standin.script = Script()
    _standin.scripts.clear()
    _standin.wait_for(lambda s: s.open == 0)
    _standin.reset()
    yield _standin
    if request.node.stash.get(FAILED, False):
        # A test that failed while the model held an answer would leave it open for the next ones, which
        # would then fail in turn: let it go. (After a test that passed, the next one's wait above is a
        # check that every stream ended.)
        _standin.release()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority, as a company's TLS inspection has."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tls_upstream(ca: trustme.CA) -> Iterator[StandInServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with StandInServer(tls=context) as server:
        yield server


@pytest.fixture
def tls(tls_upstream: StandInServer, ca_file: str, monkeypatch: pytest.MonkeyPatch) -> StandInServer:
    """The TLS stand-in, reset, with the default client trusting its CA (as SSL_CERT_FILE does)."""
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    tls_upstream.script = Script()
    tls_upstream.wait_for(lambda s: s.open == 0)
    tls_upstream.reset()
    return tls_upstream


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from .browsers import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page of its own (a fresh context); its last state is kept as a screenshot in test-artifacts/."""
    from .browsers import ARTIFACTS

    context = browser.new_context()
    page = context.new_page()
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


AppFactory = Callable[..., Flask]


T = TypeVar("T")


def eventually(get: Callable[[], T], ok: Callable[[T], object], timeout: float = 30.0) -> T:
    """Poll ``get()`` until ``ok`` holds for what it returns, and return that. The timeout only
    bounds how long a broken build takes to fail; the failure shows the last value."""
    deadline = time.monotonic() + timeout
    while not ok(value := get()):
        assert time.monotonic() < deadline, f"condition not met within {timeout}s: {value!r}"
        time.sleep(0.02)
    return value


def hooked_app(upstream: StandInServer, **options: Any) -> tuple[Flask, ChatBlueprint, list[ChatResult]]:
    """An app with the blueprint at /api, and the blueprint (to register hooks and tools on), whose
    ``after_stream`` collects every ``ChatResult`` in the list returned."""
    app = Flask(__name__)
    options.setdefault("first_event_wait", 0.2)
    blueprint = create_blueprint(api_key=API_KEY, base_url=upstream.url, max_retries=0, **options)
    results: list[ChatResult] = []
    blueprint.after_stream(results.append)
    app.register_blueprint(blueprint, url_prefix="/api")
    return app, blueprint, results


@pytest.fixture
def make_app(upstream: StandInServer) -> AppFactory:
    """Build an app with the blueprint at /api, pointed at the stand-in. Options go to create_blueprint."""

    def factory(config: dict[str, Any] | None = None, **options: Any) -> Flask:
        app = Flask("test_app")
        app.config.update(config or {})
        if "client" not in options:
            options.setdefault("api_key", API_KEY)
            options.setdefault("base_url", upstream.url)
            options.setdefault("max_retries", 0)
        app.register_blueprint(create_blueprint(**options), url_prefix="/api")
        return app

    return factory


@pytest.fixture
def client(make_app: AppFactory) -> FlaskClient:
    return make_app().test_client()


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(name)s %(message)s").format(record))


SESSION_LOG = _Everything()
"""Every log record of the test session, formatted, with tracebacks: the leak check reads it."""


@pytest.fixture(scope="session", autouse=True)
def _record_every_log_line() -> Iterator[None]:
    root = logging.getLogger()
    root.addHandler(SESSION_LOG)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    yield
    root.setLevel(old_level)
    root.removeHandler(SESSION_LOG)


@pytest.fixture(scope="session", autouse=True)
def _enough_file_descriptors() -> None:
    """Tests with a thousand streams hold several thousand sockets (and servers inherit this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every test, whatever their order: the key is in no log line of the session."""
    from .leaks import key_leaks
    from .servers import LOGS

    leaks = key_leaks(API_KEY, SESSION_LOG.lines, LOGS)
    if leaks:
        print(f"\nThe API key leaked into {len(leaks)} log line(s), e.g. {leaks[:3]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
