"""Screenshots of the three chat UIs as users get them, from real Chromium: the demo page, the React + RTK
Query example and the React + useChat example, each on a desktop, a 390 px phone and in dark mode.

    python examples/screenshots.py     # writes docs/screenshots/{demo,react,ai-sdk}-{desktop,phone,dark}.png
                                       # and demo-streaming.gif, an answer streaming in
                                       # (make screenshots, which builds the React examples first)

The example app runs here in its offline demo (no OPENAI_API_KEY, a fresh database per UI), on 127.0.0.1.
Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM), headless and calling nowhere. Re-run it when
the page changes, and commit the pictures.
"""

from __future__ import annotations

import io
import os
import sys
import time
import tempfile
import threading
from pathlib import Path

from PIL import Image
from playwright.sync_api import Browser, sync_playwright
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
        record_streaming(browser, create_app)
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


GIF = {"viewport": {"width": 760, "height": 520}}
FRAME = 0.12
"""Seconds between frames: the demo model writes a word every 40 ms."""


def record_streaming(browser: Browser, create_app: object) -> None:
    """The demo page while an answer streams in, as an animated GIF: frames taken every ``FRAME`` seconds
    from the question to the answer's end, then the last one held."""
    os.environ["CHAT_DATABASE_URL"] = f"sqlite:///{Path(tempfile.mkdtemp()) / 'chat.db'}"
    server = make_server("127.0.0.1", 0, create_app(), threaded=True)  # type: ignore[operator]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_context(**GIF).new_page()  # type: ignore[arg-type]
        page.goto(f"http://127.0.0.1:{server.server_port}/")
        page.wait_for_selector("html[data-ready]")
        page.fill("#prompt", "How does the answer reach my browser?")
        frames = [(time.monotonic(), page.screenshot())]
        page.press("#prompt", "Enter")
        answer = page.locator(".message.assistant").last
        while True:
            time.sleep(FRAME)
            frames.append((time.monotonic(), page.screenshot()))
            if answer.count() and answer.get_attribute("data-status") == "complete" or len(frames) > 400:
                break
        page.context.close()
    finally:
        server.shutdown()
    # each frame shown for as long as it was on the screen, so the GIF plays at the stream's own pace
    durations = [int((later - taken) * 1000) for (taken, _), (later, _) in zip(frames, frames[1:])] + [3000]
    images = [Image.open(io.BytesIO(frame)).convert("RGB").quantize(colors=64) for _, frame in frames]
    images[0].save(OUT / "demo-streaming.gif", save_all=True, append_images=images[1:], duration=durations, loop=0,
                   optimize=True)
    print(OUT / "demo-streaming.gif", len(images), "frames")


if __name__ == "__main__":
    main()
