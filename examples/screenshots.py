"""Screenshots of the three chat UIs as users get them, from real Chromium: the demo page, the React + RTK
Query example and the React + useChat example, each on a desktop, a 390 px phone and in dark mode.

    python examples/screenshots.py     # writes docs/screenshots/{demo,react,ai-sdk}-{desktop,phone,dark}.png
                                       # (make screenshots, which builds the React examples first)

The example app runs here in its offline demo (no OPENAI_API_KEY, a fresh database per UI), on 127.0.0.1.
Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM), headless and calling nowhere. Re-run it when
the page changes, and commit the pictures.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
UIS = {"demo": "/", "react": "/react/", "ai-sdk": "/ai-sdk/"}
VIEWS = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
              "device_scale_factor": 2},
    "dark": {"viewport": {"width": 1280, "height": 800}, "color_scheme": "dark"},
}


def main() -> None:
    os.environ.pop("OPENAI_API_KEY", None)  # the offline demo
    sys.path.insert(0, str(ROOT))
    from example_app import create_app

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                             args=CHROMIUM_ARGS, headless=True)
        for ui, path in UIS.items():
            os.environ["CHAT_DATABASE_URL"] = f"sqlite:///{Path(tempfile.mkdtemp()) / 'chat.db'}"
            server = make_server("127.0.0.1", 0, create_app(), threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                for view, options in VIEWS.items():
                    page = browser.new_context(**options).new_page()
                    page.goto(f"http://127.0.0.1:{server.server_port}{path}")
                    page.wait_for_selector("html[data-ready]")
                    page.fill("#prompt", "How does the answer reach my browser?")
                    page.press("#prompt", "Enter")
                    page.wait_for_selector(".message.assistant[data-status=complete]", timeout=60_000)
                    page.locator("#thread").evaluate("thread => thread.scrollTop = 0")
                    page.screenshot(path=str(OUT / f"{ui}-{view}.png"))
                    print(OUT / f"{ui}-{view}.png")
                    page.context.close()
            finally:
                server.shutdown()
        browser.close()


if __name__ == "__main__":
    main()
