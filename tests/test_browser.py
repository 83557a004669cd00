"""End to end in real headless Chromium: the React + RTK Query and useChat examples (the demo page at /
has tests/test_demo_page.py),
served by the example app under gunicorn + gevent, talking to the stand-in model.

Assertions are on the DOM; screenshots go to test-artifacts/ for debugging.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .browsers import WATCH_GROWTH, example_app, growth
from .servers import ROOT, Gunicorn

REPLY = " ".join(f"word{i}" for i in range(1, 31))
HALF = " ".join(f"word{i}" for i in range(1, 16))


@pytest.fixture(scope="module")
def server(_standin: StandInServer) -> Iterator[Gunicorn]:
    with example_app(_standin) as gunicorn:
        yield gunicorn


# ---- the React + RTK Query example at /react/ -------------------------------------------------------


@pytest.fixture
def react_page(page: Page, server: Gunicorn) -> Page:
    assert (ROOT / "examples/react-rtk-query/dist/index.html").is_file(), "build it: make test does"
    page.goto(server.url + "/react/")
    expect(page.locator("#send")).to_be_enabled()
    return page


def test_react_streams_incrementally(react_page: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, hold_after=15)
    react_page.evaluate(WATCH_GROWTH, ".message.assistant .content")
    react_page.fill("#prompt", "Count to thirty")
    react_page.click("#send")
    assistant = react_page.locator(".message.assistant")
    expect(assistant.locator(".content")).to_have_text(HALF)
    expect(assistant).to_have_attribute("data-status", "streaming")
    assert upstream.stats.finished == 0
    upstream.release()
    expect(assistant).to_have_attribute("data-status", "complete")
    expect(assistant.locator(".content")).to_have_text(REPLY)
    steps = growth(react_page)
    assert steps == sorted(steps) and len(HALF) in steps and steps[-1] == len(REPLY), steps
    expect(react_page.locator(".message.user .content")).to_have_text("Count to thirty")


def test_react_stop_closes_the_upstream(react_page: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY * 10, hold_after=3)
    react_page.click("#send")
    assistant = react_page.locator(".message.assistant")
    expect(assistant.locator(".content")).to_contain_text("word3")
    react_page.click("#stop")
    expect(assistant).to_have_attribute("data-status", "stopped")
    expect(assistant.locator(".note")).to_have_text("(stopped)")
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)
    expect(react_page.locator("#error")).to_have_text("")
    expect(react_page.locator("#send")).to_be_enabled()


def test_react_shows_errors(react_page: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, error_after=3, delay=0.02)
    react_page.click("#send")
    expect(react_page.locator("#error")).to_have_text("The model provider reported an error during the answer.")
    assistant = react_page.locator(".message.assistant")
    expect(assistant).to_have_attribute("data-status", "error")
    expect(assistant.locator(".content")).to_have_text("word1 word2 word3")
    react_page.fill("#prompt", "")
    react_page.click("#send")
    # only the new message goes up (the server keeps the history), and it is empty
    expect(react_page.locator("#error")).to_have_text("messages[0].content must not be empty.")


# ---- saved conversations, reopened -------------------------------------------------------------------


def test_react_reopens_a_saved_conversation(react_page: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply="kept for later")
    react_page.fill("#prompt", "Remember this in React")
    react_page.click("#send")
    expect(react_page.locator(".message.assistant")).to_have_attribute("data-status", "complete")
    react_page.reload()  # nothing in memory: the list and the conversation come from the server
    react_page.locator("#conversations button", has_text="Remember this in React").first.click()
    expect(react_page.locator(".message.user .content")).to_have_text(["Remember this in React"])
    expect(react_page.locator(".message.assistant .content")).to_have_text(["kept for later"])


# ---- tools, as they happen -------------------------------------------------------------------------------


def said_by_tool(messages: list[dict[str, object]]) -> str:
    return f"The clock said {messages[-1]['content']}."


def test_react_shows_a_tool_call(react_page: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply=said_by_tool, tool_calls=[{"name": "current_time", "arguments": {"zone": "UTC"}}])
    react_page.fill("#prompt", "What time is it?")
    react_page.click("#send")
    assistant = react_page.locator(".message.assistant")
    expect(assistant.locator(".tool")).to_contain_text('current_time({"zone":"UTC"}) → "20')
    expect(assistant.locator(".content")).to_contain_text("The clock said 20")


# ---- the React + AI SDK (useChat) example at /ai-sdk/ -------------------------------------------------


@pytest.fixture
def ai_sdk_page(page: Page, server: Gunicorn) -> Page:
    assert (ROOT / "examples/react-ai-sdk/dist/index.html").is_file(), "build it: make test does"
    page.goto(server.url + "/ai-sdk/")
    expect(page.locator("#send")).to_be_enabled()
    return page


def test_use_chat_streams_incrementally(ai_sdk_page: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, hold_after=15)
    ai_sdk_page.fill("#prompt", "Count to thirty")
    ai_sdk_page.click("#send")
    content = ai_sdk_page.locator(".message.assistant .content")
    expect(content).to_have_text(HALF)
    expect(ai_sdk_page.locator("#status")).to_have_text("streaming")
    assert upstream.stats.finished == 0
    upstream.release()
    expect(ai_sdk_page.locator("#status")).to_have_text("ready")
    expect(content).to_have_text(REPLY)
    expect(ai_sdk_page.locator(".message.user")).to_contain_text("Count to thirty")


def test_use_chat_stop_closes_the_upstream(ai_sdk_page: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY * 10, hold_after=3)
    ai_sdk_page.click("#send")
    expect(ai_sdk_page.locator(".message.assistant .content")).to_contain_text("word3")
    ai_sdk_page.click("#stop")
    expect(ai_sdk_page.locator("#status")).to_have_text("ready")
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)
    expect(ai_sdk_page.locator(".message.assistant .content")).to_have_text("word1 word2 word3")


def test_use_chat_shows_errors_and_tools(ai_sdk_page: Page, upstream: StandInServer) -> None:
    upstream.script = Script(status=503)
    ai_sdk_page.click("#send")
    expect(ai_sdk_page.locator("#error")).to_have_text("The model provider is unavailable.")
    upstream.script = Script(reply="Used the clock.", tool_calls=[{"name": "current_time", "arguments": {"zone": "UTC"}}])
    ai_sdk_page.fill("#prompt", "What time is it?")
    ai_sdk_page.click("#send")
    expect(ai_sdk_page.locator("#status")).to_have_text("ready")
    tool = ai_sdk_page.locator(".message.assistant .tool").last
    expect(tool).to_have_attribute("data-state", "output-available")
    expect(tool).to_contain_text('current_time({"zone":"UTC"}) → "20')
    expect(ai_sdk_page.locator(".message.assistant .content").last).to_have_text("Used the clock.")


# ---- a page on one origin, the API on another (Flask-CORS with cookies) -------------------------------

CROSS_ORIGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>cross-origin</title><pre id="out"></pre>
<script type="module">
  import { streamChat } from "API/api/chatstream.js";
  const controller = new AbortController();
  window.stopChat = () => controller.abort();
  window.probe = async () => {
    const login = await fetch("API/api/login", { method: "POST", credentials: "include" });
    if (login.status !== 204) throw new Error(`login: ${login.status}`);
    const probe = await fetch("API/api/chat?format=ndjson", { method: "POST", credentials: "include",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ content: "probe" }) });
    await probe.text();
    return probe.headers.get("X-Chat-Stream-Id");
  };
  window.chat = async () => {
    try {
      for await (const e of streamChat("API/api/chat", { content: "hi" }, { signal: controller.signal, credentials: "include" })) {
        if (e.type === "delta") document.querySelector("#out").textContent += e.content;
      }
    } catch (error) {
      window.ended = error.name;
    }
  };
</script>"""


@pytest.fixture
def page_origin() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A static server on its own port: another origin than the API's. Serves what the test puts in."""
    import http.server
    import threading

    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pages
    server.shutdown()
    server.server_close()


def test_cross_origin_page_streams_and_its_stop_reaches_the_server(
        page: Page, upstream: StandInServer, page_origin: tuple[str, dict[str, bytes]]) -> None:
    origin, pages = page_origin
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url, "PAGE_ORIGIN": origin}
    # finish: a client that only goes away leaves the answer running; only the stop stops it.
    factory = "cors:create_app({'CHATSTREAM_ON_CLIENT_LEAVE': 'finish', 'CHATSTREAM_MAX_RETRIES': 0})"
    with Gunicorn(factory, env=env, extra_args=["--pythonpath", str(ROOT / "examples" / "recipes")]) as api:
        pages["/"] = CROSS_ORIGIN_PAGE.replace("API", api.url).encode()
        upstream.script = Script(reply="probed")
        page.goto(origin + "/")
        assert page.evaluate("window.probe()") is not None  # the stream id header is readable cross-origin
        upstream.script = Script(reply=REPLY, hold_after=15)
        page.evaluate("() => { window.chat(); }")
        expect(page.locator("#out")).to_have_text(HALF)  # streamed across origins, held halfway
        assert upstream.stats.finished == 1  # the probe; the chat is held
        page.evaluate("window.stopChat()")
        stats = upstream.wait_for(lambda s: s.open == 0)
        assert (stats.cancelled, stats.finished) == (1, 1)
        assert page.evaluate("window.ended") == "AbortError"
        log = api.log()
    # Stopped on the server's word (the stop, sent with the session cookie of the user who started
    # it), not read on for a client that left, which "finish" would have done.
    assert "outcome=stopped" in log and "outcome=done_after_client_left" not in log, log[-3000:]
