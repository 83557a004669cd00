"""The React examples' vitest suites (RTK Query's streaming mutation, and useChat), against the real
app under gunicorn + gevent."""

from __future__ import annotations

import re

import pytest

from flask_chatstream.testing import StandInServer

from .servers import Gunicorn, ROOT, run_node_tests, stand_in_env

pytestmark = [pytest.mark.node, pytest.mark.server]


@pytest.mark.parametrize("example", ["react-rtk-query", "react-ai-sdk"])
def test_react_example(_standin: StandInServer, example: str) -> None:
    directory = ROOT / "examples" / example
    assert (ROOT / "examples" / "node_modules").is_dir(), "run `npm ci` in examples/ (make test does)"
    env = stand_in_env(_standin.url, on_client_leave="finish")  # the example app as it ships
    with Gunicorn(env=env) as server:
        output = run_node_tests(["npx", "vitest", "run", "--reporter=verbose"], cwd=directory, server=server,
                                standin_url=_standin.url)
    print(output[-3000:])
    assert re.search(r"Tests\s+[1-9]\d* passed", output) and "failed" not in output
