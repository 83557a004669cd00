"""The AG-UI example page (examples/ag-ui/, @ag-ui/client's HttpAgent with the shared chat look) as a
person uses it, in real headless Chromium at desktop and phone widths, served by the example app under
gunicorn + gevent (two workers, as `make demo` runs it) and talking to the stand-in model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from flask_chatstream.testing import Script, StandInServer

from .browsers import example_app
from .servers import ROOT, Gunicorn
from .test_chat_uis import WORDS, last_answer, open_page, send

pytestmark = [pytest.mark.browser, pytest.mark.node, pytest.mark.server]

VIEWS = {"desktop": {"viewport": {"width": 1280, "height": 800}},
         "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}}


@pytest.fixture(scope="module")
def server(_standin: StandInServer) -> Iterator[Gunicorn]:
    assert (ROOT / "examples/ag-ui/dist/index.html").is_file(), "build the examples: make test does"
    with example_app(_standin) as gunicorn:
        yield gunicorn


@pytest.fixture(params=list(VIEWS))
def page(browser: Browser, server: Gunicorn, request: pytest.FixtureRequest) -> Iterator[Page]:
    yield from open_page(browser, server, "/ag-ui/", request, **VIEWS[request.param])


def test_the_answer_streams_in_while_the_model_is_held(page: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply=WORDS, hold_after=5)
    send(page, "Count for me")
    expect(page.locator("#messages .message.user")).to_have_text(["Count for me"])
    expect(last_answer(page).locator(".content")).to_contain_text("word5")
    expect(last_answer(page)).to_have_attribute("data-status", "streaming")
    assert upstream.stats.finished == 0  # on the page before the model was done
    upstream.release()
    expect(last_answer(page)).to_have_attribute("data-status", "complete")
    expect(last_answer(page).locator(".content")).to_have_text(WORDS)
    upstream.script = Script(reply=lambda messages: f"{len(messages)} messages went up")
    send(page, "And now?")
    expect(last_answer(page).locator(".content")).to_have_text("3 messages went up")  # the agent keeps the thread


def test_stop_stops_the_model(page: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply=WORDS, hold_after=3)
    send(page, "Talk")
    expect(last_answer(page).locator(".content")).to_contain_text("word3")
    page.click("#stop")
    expect(last_answer(page)).to_have_attribute("data-status", "stopped")
    expect(last_answer(page).locator(".note")).to_have_text("Stopped.")
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)  # stopped upstream, not finished for a reader who left
    expect(page.locator("#send")).to_be_visible()


@pytest.mark.parametrize("approved", [True, False], ids=["approve", "deny"])
def test_a_tool_that_needs_approval_waits_for_the_person(page: Page, upstream: StandInServer, approved: bool) -> None:
    upstream.script = Script(reply=lambda messages: f"The tool said: {messages[-1]['content']}",
                             tool_calls=[{"name": "rename_chat", "arguments": {"title": "Trip plans"}}])
    send(page, "Rename this chat to Trip plans")
    approval = page.locator("#messages .message.tool.approval")
    expect(approval).to_contain_text('rename_chat({"title":"Trip plans"})')
    assert upstream.stats.requests == 1  # nothing ran yet
    approval.locator(".approve" if approved else ".deny").click()
    expect(approval).to_have_count(0)
    tool = page.locator("#messages .message.tool")
    expect(tool.locator("summary")).to_have_text("Used a tool: rename_chat (denied)" if not approved
                                                 else "Used a tool: rename_chat")
    expect(last_answer(page)).to_have_attribute("data-status", "complete")
    # Approved, the server ran it (this page's chats are not saved, so it says it cannot); denied, it did not.
    expect(last_answer(page).locator(".content")).to_contain_text("not saved" if approved else "denied")
