"""Real headless Chromium (Debian's: Playwright cannot download browsers here), for the UI tests."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from .servers import ROOT

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


def growth(page: Page) -> list[int]:
    return list(page.evaluate("window.__growth"))
