"""The three chat UIs as a person uses them, in real headless Chromium (desktop, a 390 px phone, dark mode):
the demo page at / (plain JS), and the React examples at /react/ (RTK Query) and /ai-sdk/ (useChat),
which share its look (examples/chat-ui/). Each test runs against each UI, served by the example app
under gunicorn + gevent (two workers, as `make demo` runs it), talking to the stand-in model.
Assertions are on the DOM and on what the server saved."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from playwright.sync_api import Browser, Page, expect

from flask_chatstream.testing import Script, StandInServer

from .browsers import ARTIFACTS, WATCH_GROWTH, example_app, growth
from .conftest import API_KEY, eventually
from .servers import ROOT, Gunicorn

pytestmark = [pytest.mark.browser, pytest.mark.node, pytest.mark.server]

UIS = {"demo": "/", "react": "/react/", "ai-sdk": "/ai-sdk/"}
BUILDS = {"react": "react-rtk-query", "ai-sdk": "react-ai-sdk"}
WORDS = " ".join(f"word{i}" for i in range(1, 31))
MARKDOWN = ("Here is **bold** text and a list:\n\n- first item\n- second item\n\n"
            "| name | value |\n|---|---|\n| alpha | 1 |\n\n```python\nprint('hello')\n```\n\nThe end.")
HOSTILE = ('<img src="x" onerror="window.__pwned = \'img\'">\n\n'
           "<script>window.__pwned = 'script'</script>\n\n"
           "[a link](javascript:window.__pwned='link')\n\n"
           '<a href="javascript:window.__pwned=\'anchor\'">an anchor</a>\n\n'
           '<iframe srcdoc="<script>parent.__pwned=\'iframe\'</script>"></iframe>\n\n'
           "![an image](javascript:window.__pwned='image')\n\n"
           '<svg onload="window.__pwned=\'svg\'"></svg> and **markdown** still works.')


@pytest.fixture(scope="module")
def server(_standin: StandInServer) -> Iterator[Gunicorn]:
    with example_app(_standin) as gunicorn:
        yield gunicorn


@pytest.fixture(params=list(UIS))
def ui(request: pytest.FixtureRequest) -> str:
    if request.param in BUILDS:
        build = ROOT / "examples" / BUILDS[request.param] / "dist" / "index.html"
        assert build.is_file(), "build the React examples: make test does"
    return str(request.param)


def open_page(browser: Browser, server: Gunicorn, path: str, request: pytest.FixtureRequest,
              **options: Any) -> Iterator[Page]:
    context = browser.new_context(**options)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + path)
    page.wait_for_selector("html[data-ready]")
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    context.close()
    # Nothing a person does here logs an error (a failed fetch, a React warning), but what a test
    # expects (a refused request, say) and allows by a piece of its text.
    allowed = getattr(request.node, "console_allows", ())
    assert [e for e in errors if not any(piece in e for piece in allowed)] == [], errors


@pytest.fixture
def desktop(browser: Browser, server: Gunicorn, ui: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    yield from open_page(browser, server, UIS[ui], request, viewport={"width": 1280, "height": 800})


@pytest.fixture
def phone(browser: Browser, server: Gunicorn, ui: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    yield from open_page(browser, server, UIS[ui], request, viewport={"width": 390, "height": 844}, is_mobile=True,
                         has_touch=True)


@pytest.fixture
def dark(browser: Browser, server: Gunicorn, ui: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    yield from open_page(browser, server, UIS[ui], request, viewport={"width": 1280, "height": 800}, color_scheme="dark")


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def last_answer(page: Page) -> Any:
    return page.locator("#messages .message.assistant").last


def saved(page: Page, server: Gunicorn) -> dict[str, Any]:
    """The open conversation as the server keeps it, once it has saved the last answer (it does so
    after the stream's last byte, which the page may already be showing)."""
    conversation_id = unquote(page.evaluate("location.hash").lstrip("#"))

    def get() -> dict[str, Any]:
        response = page.request.get(f"{server.url}/api/conversations/{conversation_id}")
        assert response.ok, response.status
        return dict(json.loads(response.body()))

    return eventually(get, lambda c: all(m["status"] != "streaming" for m in c["messages"]))


# ---- writing and reading -------------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["desktop", "phone", "dark"])
def test_enter_sends_and_markdown_renders_while_it_streams(view: str, ui: str, request: pytest.FixtureRequest,
                                                           upstream: StandInServer) -> None:
    page: Page = request.getfixturevalue(view)
    upstream.script = Script(reply=MARKDOWN, hold_after=14)  # held after the list, before the table
    page.evaluate(WATCH_GROWTH, "#messages .message.assistant .content")
    send(page, "Show me markdown")
    expect(page.locator("#prompt")).to_have_value("")  # the prompt clears at once
    expect(page.locator("#messages .message.user")).to_have_text(["Show me markdown"])
    answer = last_answer(page)
    expect(answer.locator(".content strong")).to_have_text("bold")  # rendered, while the model is held
    expect(answer.locator(".content li")).to_have_text(["first item", "second item"])
    assert (upstream.stats.open, upstream.stats.finished) == (1, 0)
    expect(answer.locator(".content table")).to_have_count(0)
    upstream.release()
    expect(answer).to_have_attribute("data-status", "complete")
    expect(answer.locator(".content td")).to_have_text(["alpha", "1"])
    expect(answer.locator(".content pre code.hljs")).to_have_text("print('hello')")
    expect(answer.locator(".content pre code .hljs-built_in")).to_have_text("print")  # highlighted
    assert "**" not in answer.locator(".content").inner_text() and "```" not in answer.locator(".content").inner_text()
    steps = growth(page)
    # It grew render by render and never blanked out. (It may shrink a little on the way: a table's
    # header is a paragraph with its pipes until the row under it makes it a table.)
    assert len(steps) >= 3 and 0 not in steps[1:] and steps[-1] == max(steps), steps
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= page.viewport_size["width"], width  # nothing sticks out sideways  # type: ignore[index]
    expect(page.locator("#send")).to_be_visible()


def test_hostile_markdown_does_nothing(desktop: Page, ui: str, upstream: StandInServer,
                                      request: pytest.FixtureRequest) -> None:
    """Model output is untrusted: raw HTML, event handlers, javascript: links and images never run."""
    dialogs: list[str] = []
    desktop.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    upstream.script = Script(reply=HOSTILE)
    send(desktop, "Be nasty")
    answer = last_answer(desktop)
    expect(answer).to_have_attribute("data-status", "complete")
    expect(answer.locator(".content strong")).to_have_text("markdown")
    content = answer.locator(".content")
    assert content.locator("script, iframe, svg, [onerror], [onload]").count() == 0
    assert content.locator("a[href^='javascript'], img[src^='javascript']").count() == 0
    for link in content.locator("a").all():
        link.click(modifiers=["Control"])  # whatever is left of them, clicked
    assert desktop.evaluate("window.__pwned") is None and dialogs == []
    assert desktop.evaluate("parent.__pwned") is None


def test_an_answer_loads_nothing_it_names(desktop: Page, ui: str, upstream: StandInServer) -> None:
    """No remote images (nor media, nor CSS urls) from an answer: each would be a request to wherever the
    model points, redrawn every frame. A markdown image shows as a link to it instead."""
    fetched: list[str] = []
    desktop.on("request", lambda request: fetched.append(request.url) if "probe" in request.url else None)
    upstream.script = Script(reply='Look: ![a tracker](/probe-md.png?secret=1)\n\n<img src="/probe-html.png">\n\n'
                                   '<p style="background:url(/probe-css.png)">styled</p>\n\n<video poster="/probe-video.png">'
                                   '</video>\n\n<picture><source srcset="/probe-srcset.png"></picture> **the end**',
                             delay=0.01)
    send(desktop, "Show me a picture")
    answer = last_answer(desktop)
    expect(answer).to_have_attribute("data-status", "complete")
    expect(answer.locator(".content strong")).to_have_text("the end")
    link = answer.locator(".content a", has_text="image: a tracker")
    expect(link).to_have_attribute("href", "/probe-md.png?secret=1")
    assert answer.locator(".content img, .content video, .content source, .content [style]").count() == 0
    desktop.reload()
    desktop.wait_for_selector("html[data-ready]")
    expect(last_answer(desktop).locator(".content a", has_text="image: a tracker")).to_be_visible()
    assert fetched == []


def test_a_blank_message_is_never_sent(desktop: Page, upstream: StandInServer) -> None:
    desktop.fill("#prompt", "  \n  ")
    expect(desktop.locator("#send")).to_be_disabled()
    desktop.press("#prompt", "Enter")
    desktop.locator("#ask").evaluate("form => form.requestSubmit()")
    expect(desktop.locator("#messages .message")).to_have_count(0)
    assert upstream.stats.requests == 0


def test_shift_enter_adds_a_line(desktop: Page, upstream: StandInServer) -> None:
    desktop.fill("#prompt", "first line")
    desktop.press("#prompt", "Shift+Enter")
    desktop.keyboard.type("second line")
    expect(desktop.locator("#prompt")).to_have_value("first line\nsecond line")
    assert upstream.stats.requests == 0


# ---- stop, errors, regenerate --------------------------------------------------------------------------


def test_stop_shows_stopped_and_the_server_keeps_the_partial_answer(desktop: Page, server: Gunicorn,
                                                                   upstream: StandInServer,
                                                                   request: pytest.FixtureRequest) -> None:
    # A stop that reaches the server before the browser has let go of the response cuts it there (as
    # documented), and Chromium logs the cut.
    request.node.console_allows = ["ERR_INCOMPLETE_CHUNKED_ENCODING"]
    upstream.script = Script(reply=WORDS, hold_after=3)
    send(desktop, "Count")
    answer = last_answer(desktop)
    expect(answer.locator(".content")).to_have_text("word1 word2 word3")
    desktop.click("#stop")
    expect(answer).to_have_attribute("data-status", "stopped")
    expect(answer.locator(".note")).to_have_text("Stopped.")
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)
    kept = [m for m in saved(desktop, server)["messages"] if m["role"] == "assistant"]
    assert [(m["status"], m["content"]) for m in kept] == [("stopped", "word1 word2 word3")]


def test_errors_are_words_a_person_understands(desktop: Page, ui: str, upstream: StandInServer,
                                              request: pytest.FixtureRequest) -> None:
    request.node.console_allows = ["status of 502"]  # Chromium logs the refused request itself
    upstream.script = Script(status=503)
    send(desktop, "Hello?")
    words = "The AI provider cannot be reached right now. Try again in a moment."
    expect(desktop.locator("#error")).to_have_text(words)
    expect(last_answer(desktop)).to_have_attribute("data-status", "error")
    expect(last_answer(desktop).locator(".note")).to_have_text(words)
    upstream.script = Script(reply=WORDS, error_after=3, delay=0.02)
    send(desktop, "Again")
    # chatstream.js has words for the error event's code; the AI SDK's error part carries no code, only
    # the server's message (also written for people)
    words = ("The model provider reported an error during the answer." if ui == "ai-sdk"
             else "The AI provider reported an error during the answer.")
    expect(desktop.locator("#error")).to_have_text(words)
    expect(last_answer(desktop).locator(".content")).to_have_text("word1 word2 word3")  # what came, kept


def test_regenerate_replaces_the_answer(desktop: Page, server: Gunicorn, upstream: StandInServer) -> None:
    upstream.script = Script(reply="the first answer")
    send(desktop, "Answer me")
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    upstream.script = Script(reply=lambda messages: f"a new answer, from {len(messages)} message(s)")
    last_answer(desktop).locator(".regenerate").click()
    expect(desktop.locator("#messages .message.assistant .content")).to_have_text(["a new answer, from 1 message(s)"])
    expect(desktop.locator("#messages .message.user")).to_have_text(["Answer me"])
    messages = saved(desktop, server)["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", "Answer me"),
                                                             ("assistant", "a new answer, from 1 message(s)")]


def test_copy_buttons_copy_the_answer_and_each_code_block(desktop: Page, upstream: StandInServer) -> None:
    desktop.context.grant_permissions(["clipboard-read", "clipboard-write"])
    upstream.script = Script(reply=MARKDOWN)
    send(desktop, "Code please")
    answer = last_answer(desktop)
    expect(answer).to_have_attribute("data-status", "complete")
    answer.locator("pre .copy-code").click()
    assert desktop.evaluate("navigator.clipboard.readText()") == "print('hello')\n"
    answer.locator(".actions .copy").click()
    assert desktop.evaluate("navigator.clipboard.readText()") == MARKDOWN


# ---- conversations ---------------------------------------------------------------------------------------


def test_a_reload_keeps_the_conversation_and_an_answer_on_its_way(desktop: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply="kept for later")
    send(desktop, "Remember this")
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    upstream.script = Script(reply=WORDS, hold_after=5)
    send(desktop, "Keep going")
    expect(last_answer(desktop).locator(".content")).to_contain_text("word5")
    desktop.reload()  # mid-answer: the server finishes it (on_client_leave="finish"), the page follows
    desktop.wait_for_selector("html[data-ready]")
    expect(desktop.locator("#messages .message.user")).to_have_text(["Remember this", "Keep going"])
    expect(last_answer(desktop)).to_have_attribute("data-status", "streaming")
    expect(last_answer(desktop).locator(".note")).to_contain_text("Still answering")
    upstream.release()
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    expect(last_answer(desktop).locator(".content")).to_have_text(WORDS)
    upstream.script = Script(reply=lambda messages: f"{len(messages)} messages went up")
    send(desktop, "And now?")
    expect(last_answer(desktop).locator(".content")).to_have_text("5 messages went up")  # with its history


def test_the_list_has_dates_renames_deletes_and_reopens(desktop: Page, ui: str, server: Gunicorn,
                                                        upstream: StandInServer) -> None:
    one_, two, renamed_ = (f"{text} ({ui})" for text in ("Chat number one", "Chat number two", "Renamed chat"))
    upstream.script = Script(reply="first chat")
    send(desktop, one_)
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    desktop.click("#new")
    expect(desktop.locator("#messages .message")).to_have_count(0)
    upstream.script = Script(reply="second chat")
    send(desktop, two)
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    one = desktop.locator("#conversations li", has_text=one_)
    expect(one.locator("time")).to_contain_text("Today")
    one.locator(".rename").click()
    desktop.fill("#conversations input", renamed_)
    desktop.press("#conversations input", "Enter")
    renamed = desktop.locator("#conversations li", has_text=renamed_)
    expect(renamed).to_have_count(1)
    renamed.locator(".open").click()
    expect(desktop.locator("#title")).to_have_text(renamed_)
    expect(desktop.locator("#messages .message.assistant .content")).to_have_text(["first chat"])
    desktop.once("dialog", lambda dialog: dialog.accept())
    renamed.locator(".delete").click()
    expect(desktop.locator("#conversations li", has_text=renamed_)).to_have_count(0)
    expect(desktop.locator("#messages .message")).to_have_count(0)
    titles = [c["title"] for c in json.loads(desktop.request.get(f"{server.url}/api/conversations").body())]
    assert renamed_ not in titles and two in titles


def test_a_tool_call_shows_as_it_happens(desktop: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply=lambda messages: f"The clock said {messages[-1]['content']}.",
                             tool_calls=[{"name": "current_time", "arguments": {"zone": "UTC"}}])
    send(desktop, "What time is it?")
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    tool = desktop.locator("#messages .message.tool")
    expect(tool.locator("summary")).to_have_text("Used a tool: current_time")
    expect(tool.locator("pre")).to_contain_text('current_time({"zone":"UTC"})')
    expect(tool.locator("pre")).to_contain_text('→ "20')  # the server's own clock
    expect(last_answer(desktop).locator(".content")).to_contain_text("The clock said 20")


@pytest.mark.parametrize("ui", ["demo", "react", "ai-sdk"], indirect=True)
@pytest.mark.parametrize("approved", [True, False])
def test_a_tool_that_needs_approval_waits_for_approve_or_deny(desktop: Page, server: Gunicorn, upstream: StandInServer,
                                                              approved: bool) -> None:
    """Each page shows Approve and Deny for the example's rename_chat; the answer goes on in the same
    message once the user says, the server runs the tool only on Approve, and a reload shows it so."""
    upstream.script = Script(reply=lambda messages: f"The tool said: {messages[-1]['content']}",
                             tool_calls=[{"name": "rename_chat", "arguments": {"title": "Trip plans"}}])
    send(desktop, "Rename this chat to Trip plans")
    asking = desktop.locator("#messages .message.tool.approval")
    expect(asking).to_contain_text('rename_chat({"title":"Trip plans"})')
    assert saved(desktop, server)["title"] == "Rename this chat to Trip plans"  # asked, not run
    asking.locator("button.approve" if approved else "button.deny").click()
    tool = desktop.locator("#messages .message.tool")
    expect(tool.locator("summary")).to_have_text("Used a tool: rename_chat" + ("" if approved else " (denied)"))
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    said = "Renamed the chat to \u201cTrip plans\u201d" if approved else "The user denied this tool call."
    expect(last_answer(desktop).locator(".content")).to_contain_text(said)
    expect(desktop.locator("#messages .message.assistant")).to_have_count(1)  # the same answer, not a second
    expect(tool).to_have_count(1)
    conversation = saved(desktop, server)
    assert conversation["title"] == ("Trip plans" if approved else "Rename this chat to Trip plans")
    [answer] = [m for m in conversation["messages"] if m["role"] == "assistant"]
    assert [t["name"] for t in answer["tools"]] == ["rename_chat"] and said in answer["content"]
    assert answer["tools"][0].get("denied", False) is not approved
    assert upstream.stats.requests == 2
    desktop.reload()
    desktop.wait_for_selector("html[data-ready]")
    expect(tool.locator("summary")).to_have_text("Used a tool: rename_chat" + ("" if approved else " (denied)"))
    expect(last_answer(desktop).locator(".content")).to_contain_text(said)


def test_a_reasoning_models_thinking_shows_folded_above_its_answer(desktop: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply="Forty-two.", reasoning="Let me think about the question first.", hold_after=0)
    send(desktop, "What is the answer?")
    reasoning = desktop.locator("#messages .message.reasoning")
    expect(reasoning.locator("summary")).to_have_text("Thinking…")  # held before the answer's first word
    expect(reasoning.locator(".thought")).to_have_text("Let me think about the question first.")
    expect(reasoning.locator(".thought")).not_to_be_visible()  # folded
    upstream.release()
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    expect(reasoning.locator("summary")).to_have_text("Thought it through")
    reasoning.locator("summary").click()
    expect(reasoning.locator(".thought")).to_be_visible()
    expect(last_answer(desktop).locator(".content")).to_have_text("Forty-two.")
    desktop.reload()  # the server saved it with the answer
    desktop.wait_for_selector("html[data-ready]")
    expect(reasoning.locator("summary")).to_have_text("Thought it through")
    expect(reasoning.locator(".thought")).to_have_text("Let me think about the question first.")


# ---- the same pages on the Responses API -----------------------------------------------------------------


@pytest.fixture(scope="module")
def responses_server(_standin: StandInServer) -> Iterator[Gunicorn]:
    with example_app(_standin, api="responses") as gunicorn:
        yield gunicorn


@pytest.fixture
def on_responses(browser: Browser, responses_server: Gunicorn, ui: str, request: pytest.FixtureRequest
                 ) -> Iterator[Page]:
    yield from open_page(browser, responses_server, UIS[ui], request, viewport={"width": 1280, "height": 800})


def test_each_page_works_unchanged_on_the_responses_api(on_responses: Page, upstream: StandInServer) -> None:
    page = on_responses
    upstream.script = Script(reply=WORDS, reasoning="Count them one by one.", hold_after=3)
    send(page, "Count for me")
    answer = last_answer(page)
    expect(answer.locator(".content")).to_contain_text("word3")  # streaming, while the model is held
    assert (upstream.stats.open, upstream.stats.finished) == (1, 0)
    assert "input" in upstream.stats.bodies[-1]  # asked of /v1/responses
    upstream.release()
    expect(answer).to_have_attribute("data-status", "complete")
    expect(answer.locator(".content")).to_have_text(WORDS)
    expect(page.locator("#messages .message.reasoning .thought")).to_have_text("Count them one by one.")
    upstream.script = Script(reply=lambda messages: f"The clock said {messages[-1]['content']}.",
                             tool_calls=[{"name": "current_time", "arguments": {"zone": "UTC"}}])
    send(page, "What time is it?")
    expect(last_answer(page)).to_have_attribute("data-status", "complete")
    expect(page.locator("#messages .message.tool summary")).to_have_text("Used a tool: current_time")
    expect(last_answer(page).locator(".content")).to_contain_text("The clock said 20")


# ---- a phone, and the dark ------------------------------------------------------------------------------


def test_on_a_phone_the_list_is_a_drawer(phone: Page, ui: str, upstream: StandInServer) -> None:
    upstream.script = Script(reply="small screen")
    sidebar = phone.locator("#sidebar")
    assert sidebar.bounding_box()["x"] + sidebar.bounding_box()["width"] <= 0  # type: ignore[index]
    expect(phone.locator("#prompt")).to_be_in_viewport()
    send(phone, f"On my phone ({ui})")
    expect(last_answer(phone)).to_have_attribute("data-status", "complete")
    phone.click("#toggle-sidebar")
    expect(phone.locator("#conversations li", has_text=f"On my phone ({ui})")).to_be_in_viewport()
    phone.click("#new")  # choosing closes the drawer
    phone.wait_for_function("document.getElementById('sidebar').getBoundingClientRect().right <= 0")
    assert phone.evaluate("document.scrollingElement.scrollWidth") <= 390


def test_dark_mode_follows_the_system(dark: Page, desktop: Page) -> None:
    def background(page: Page) -> int:
        rgb = page.evaluate("getComputedStyle(document.body).backgroundColor")
        return sum(int(part) for part in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3])

    assert background(dark) < 150 and background(desktop) > 600


def test_the_thread_follows_the_answer_until_the_reader_scrolls_up(desktop: Page, upstream: StandInServer) -> None:
    long_reply = "\n\n".join(f"Paragraph {i} of a long answer." for i in range(1, 61))
    at_bottom = "(t) => t.scrollHeight - t.scrollTop - t.clientHeight < 40"
    thread = desktop.locator("#thread")
    upstream.script = Script(reply=long_reply, hold_after=120)  # 20 paragraphs (6 words each), then held
    send(desktop, "Talk a lot")
    expect(last_answer(desktop).locator(".content p")).to_have_count(20)
    assert thread.evaluate(at_bottom)  # it followed the answer down
    thread.evaluate("(t) => { t.scrollTop = 0; t.dispatchEvent(new Event('scroll')); }")  # the reader goes back up
    upstream.release()
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    assert thread.evaluate("(t) => t.scrollTop") < 40  # and stays where they went


def test_a_saved_conversation_opens_at_its_newest_answer(desktop: Page, upstream: StandInServer) -> None:
    upstream.script = Script(reply="\n\n".join(f"Paragraph {i} of a long answer." for i in range(1, 61)))
    send(desktop, "Talk a lot")
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    desktop.reload()
    desktop.wait_for_selector("html[data-ready]")
    expect(last_answer(desktop).locator(".content p")).to_have_count(60)
    at_bottom = "(t) => t.scrollHeight > t.clientHeight && t.scrollHeight - t.scrollTop - t.clientHeight < 40"
    eventually(lambda: desktop.locator("#thread").evaluate(at_bottom), bool)


@pytest.mark.parametrize("ui", ["demo", "react"], indirect=True)
def test_a_refused_message_comes_back_into_the_box(desktop: Page, upstream: StandInServer,
                                                  request: pytest.FixtureRequest) -> None:
    """Too long to send: the server refuses it before any answer, and the person's text is not lost."""
    request.node.console_allows = ["status of 400"]  # Chromium logs the refused request itself
    too_long = "word " * 7000  # past the example app's max_content_chars (32,000)
    desktop.fill("#prompt", too_long)
    desktop.press("#prompt", "Enter")
    expect(desktop.locator("#error")).to_have_text("That message is too long. Shorten it and try again.")
    expect(desktop.locator("#prompt")).to_have_value(too_long)
    expect(desktop.locator("#messages .message")).to_have_count(0)  # nothing was said, so nothing shows
    assert upstream.stats.requests == 0
    desktop.fill("#prompt", "A short one")
    desktop.press("#prompt", "Enter")
    expect(last_answer(desktop)).to_have_attribute("data-status", "complete")
    expect(desktop.locator("#messages .message.user")).to_have_text(["A short one"])


def test_a_second_tab_shows_an_answer_on_its_way_at_once(desktop: Page, server: Gunicorn, ui: str,
                                                        upstream: StandInServer) -> None:
    """Another tab opens the conversation while its answer streams: it shows what the server has so far
    on its first look (counted), then the rest once the server has saved it."""
    upstream.script = Script(reply=WORDS, hold_after=5)
    send(desktop, "Keep going")
    expect(last_answer(desktop).locator(".content")).to_contain_text("word5")
    second = desktop.context.new_page()
    looks: list[str] = []
    second.on("request", lambda r: looks.append(r.url) if "/api/conversations/" in r.url else None)
    second.goto(desktop.url)
    second.wait_for_selector("html[data-ready]")
    expect(second.locator("#messages .message.user")).to_have_text(["Keep going"])
    expect(last_answer(second)).to_have_attribute("data-status", "streaming")
    assert len(looks) <= 2, looks  # shown from its first look, not after seconds of looking again
    upstream.release()
    expect(last_answer(second)).to_have_attribute("data-status", "complete")
    expect(last_answer(second).locator(".content")).to_have_text(WORDS)
    second.close()


def test_after_stop_the_page_shows_what_the_server_saved(desktop: Page, server: Gunicorn, upstream: StandInServer,
                                                         request: pytest.FixtureRequest) -> None:
    """Stop while words keep coming: the words already on their way when the server stopped are shown
    too, so a reload shows what the page showed."""
    request.node.console_allows = ["ERR_INCOMPLETE_CHUNKED_ENCODING"]  # a stopped NDJSON answer ends cut
    # 100 s of words: however slowly a busy machine renders them, the answer is still coming at the Stop.
    upstream.script = Script(reply=" ".join(f"word{i}" for i in range(1, 20001)), delay=0.005)
    send(desktop, "Count a lot")
    answer = last_answer(desktop)
    expect(answer.locator(".content")).to_contain_text("word40")
    desktop.click("#stop")
    expect(answer).to_have_attribute("data-status", "stopped")
    upstream.wait_for(lambda s: s.open == 0)
    [kept] = [m for m in saved(desktop, server)["messages"] if m["role"] == "assistant"]
    assert kept["status"] == "stopped" and "word40" in kept["content"] and "word20000" not in kept["content"]
    expect(answer.locator(".content")).to_have_text(kept["content"])  # what the page settles on is what was saved
    desktop.reload()
    desktop.wait_for_selector("html[data-ready]")
    expect(last_answer(desktop).locator(".content")).to_have_text(kept["content"])


@pytest.mark.parametrize("ui", list(UIS))
def test_a_spent_budget_says_so_in_words(browser: Browser, _standin: StandInServer, ui: str,
                                         request: pytest.FixtureRequest) -> None:
    """The example app with a small budget (``CHATSTREAM_TOKEN_BUDGET``): once spent, the page says so
    (chatstream.js's ``errorText``, with when it renews where the page has the response's Retry-After)."""
    request.node.console_allows = ["status of 429"]
    _standin.script = Script(reply=WORDS)
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "CHATSTREAM_MAX_RETRIES": "0",
           "CHATSTREAM_TOKEN_BUDGET": "40/hour"}
    with Gunicorn(env=env, workers=2) as budgeted:
        page = next(pages := open_page(browser, budgeted, UIS[ui], request, viewport={"width": 1280, "height": 800}))
        words = (r"You have used up your allowance for now\. Try again later\." if ui == "ai-sdk"
                 else r"You have used up your allowance for now\. Try again in \d+ (minutes?|hours?)\.")
        complete = "#messages .message.assistant[data-status=complete]"
        for turn in range(10):
            send(page, f"Question {turn}")
            page.wait_for_function(f"document.querySelector('#error').textContent || "
                                   f"document.querySelectorAll('{complete}').length > {turn}")
            if page.locator("#error").text_content():
                break
        assert turn >= 1  # the first answer was let in
        expect(page.locator("#error")).to_have_text(re.compile(words))
        next(pages, None)
