"""End to end in real headless Chromium: a page on one origin streaming from the API on another (the
example UIs, on the example app's own origin, have tests/test_chat_uis.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import ROOT, Gunicorn

pytestmark = [pytest.mark.browser, pytest.mark.server]

REPLY = " ".join(f"word{i}" for i in range(1, 31))
HALF = " ".join(f"word{i}" for i in range(1, 16))


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
        api.wait_for_log("outcome=stopped")  # (its line comes once after_stream has its usage, counted here)
        log = api.log()
    # Stopped on the server's word (the stop, sent with the session cookie of the user who started
    # it), not read on for a client that left, which "finish" would have done.
    assert "outcome=stopped" in log and "outcome=done_after_client_left" not in log, log[-3000:]
