"""chatstream.js, and the Vercel AI SDK's own client (ai 5 and 6), tested with node's test runner
against the real app under gunicorn + gevent."""

from __future__ import annotations

import re
import shutil

import pytest

from flask_chatstream.testing import StandInServer

from .servers import Gunicorn, ROOT, STOP_ON_LEAVE, run_node_tests, stand_in_env

pytestmark = [pytest.mark.node, pytest.mark.server]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_chatstream_js(_standin: StandInServer, api: str) -> None:
    """Every JS test, against the app on each upstream API: the same client code works on both."""
    node = shutil.which("node")
    assert node, "node is required: install Node.js 20 or newer"
    env = {**STOP_ON_LEAVE, **stand_in_env(_standin.url, api=api)}
    assert (ROOT / "tests/js/node_modules/ai6").is_dir(), "run `npm ci` in tests/js (make test does)"
    with Gunicorn(env=env) as server:
        output = run_node_tests([node, "--test", "--test-concurrency=1", "--test-reporter=spec", "tests/js/"], cwd=ROOT, server=server,
                                standin_url=_standin.url)
    print(output[-3000:])
    assert re.search(r"^ℹ pass [1-9]\d*$", output, re.M) and re.search(r"^ℹ fail 0$", output, re.M)


def test_every_error_code_the_relay_sends_has_words_in_chatstream_js() -> None:
    """``errorText`` must know every code: the error classes', the request validator's, the stream's
    stop reasons. A new code without a sentence fails here."""
    from flask_chatstream import ChatStreamError
    from flask_chatstream._errors import ToolStepsExhausted

    source = (ROOT / "flask_chatstream/static/chatstream.js").read_text()
    table = source[source.index("const ERROR_TEXT = {"):source.index("};", source.index("const ERROR_TEXT = {"))]
    known = set(re.findall(r"^  ([a-z_]+): ", table, re.M))

    def classes(cls: type) -> list[type]:
        return [cls, *(c for sub in cls.__subclasses__() for c in classes(sub))]

    codes = {c.code for c in classes(ChatStreamError)} | {ToolStepsExhausted.code}
    package = ROOT / "flask_chatstream"
    for module in package.rglob("*.py"):
        codes |= set(re.findall(r'code="([a-z_]+)"', module.read_text()))
    codes |= {"stopped", "client_left", "client_stalled", "stream_lost", "internal_error"}  # stream ends
    missing = codes - known
    assert not missing, f"codes without words in chatstream.js: {sorted(missing)}"
