"""Real headless Chromium (Debian's: Playwright cannot download browsers here), for the UI tests."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from flask_chatstream.testing import StandInServer

from .conftest import API_KEY
from .servers import ROOT, Gunicorn

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = ROOT / "test-artifacts"

# Waits bound how long a broken page may take to fail; nothing here is proved by a clock.
expect.set_options(timeout=30_000)

# Records every distinct length of an element's text, so a test can see it grow.
WATCH_GROWTH = """(selector) => {
  window.__growth = [];
  const record = () => {
    const el = document.querySelector(selector);
    const n = el ? el.textContent.length : 0;
    if (n !== window.__growth.at(-1)) window.__growth.push(n);
  };
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def example_app(standin: StandInServer, api: str = "chat") -> Gunicorn:
    """The example app as it ships (it finishes answers for clients that left), on two workers as
    `make demo` runs it: a Stop lands on either, and must reach the stream's. ``api`` is the upstream's."""
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": standin.url, "CHATSTREAM_MAX_RETRIES": "0",
           "CHATSTREAM_ON_CLIENT_LEAVE": "finish", "CHATSTREAM_API": api}
    return Gunicorn(env=env, workers=2)


def growth(page: Page) -> list[int]:
    return list(page.evaluate("window.__growth"))
