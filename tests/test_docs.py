"""The manual: ``make docs`` builds it with warnings as errors, and every Python snippet in it runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page

import flask_chatstream
from flask_chatstream import Settings
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import ROOT, Gunicorn
from .snippets import file_snippet, snippets

DOCS = ROOT / "docs"
PAGES = sorted(page for page in [ROOT / "README.md", *DOCS.rglob("*.md")] if "_build" not in page.parts)


def test_the_manual_builds_without_a_warning(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d",
                           str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert (tmp_path / "html" / "reference" / "api.html").is_file()


@pytest.mark.parametrize("page", [page for page in PAGES if snippets(page)],
                         ids=lambda page: str(page.relative_to(ROOT)))
def test_every_python_snippet_runs(page: Path, upstream: StandInServer, tmp_path: Path) -> None:
    """The page's snippets, in order, in a fresh process whose environment points at the stand-in model
    (reset, as every test's: the script of a test before it does not leak into the page's answers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATSTREAM_", "PYTEST_", "OPENAI_"))}
    env.update(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url, SECRET_KEY="a secret for the docs' snippets",
               PROMETHEUS_MULTIPROC_DIR=str(tmp_path))  # as a deployment sets it before gunicorn starts
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "snippets.py"), str(page)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def test_the_manual_has_python_snippets_to_run() -> None:
    """The runner finds the snippets (a fence it missed would go untested)."""
    found = sum(len(snippets(page)) for page in PAGES)
    fences = sum(page.read_text().count("```python\n") for page in PAGES)
    assert found == fences >= 15


def test_every_setting_is_in_the_settings_reference() -> None:
    table = (DOCS / "reference" / "settings.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` / `[A-Z_]+` \|", table, re.MULTILINE))
    assert documented == set(Settings.__dataclass_fields__) - {"client"}


def test_every_recipe_is_in_the_manual_as_a_file() -> None:
    page = (DOCS / "howto" / "host-apps.md").read_text()
    recipes = sorted((ROOT / "examples" / "recipes").glob("*.py"))
    assert len(recipes) == 8
    for path in recipes:
        assert f"```{{literalinclude}} ../../examples/recipes/{path.name}\n" in page, path.name


FRONT_END_FILE = re.compile(r"^```(?:ts|tsx|json|html)\n(?://|<!--) ([\w./]+)(?: -->)?\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.server
def test_the_tutorials_react_app_streams_and_stops_in_chromium(tmp_path: Path, page: Page) -> None:
    """The tutorial's files as they stand: type-checked, built with Vite, and served beside its app.py under
    gunicorn; the answer fills in while the model is still held, and Stop stops the model."""
    tutorial = (DOCS / "tutorial.md").read_text()
    web = tmp_path / "web"
    (web / "src").mkdir(parents=True)
    files = {name: code for name, code in FRONT_END_FILE.findall(tutorial)}
    assert set(files) == {"vite.config.ts", "tsconfig.json", "index.html", "src/chatApi.ts", "src/store.ts",
                          "src/App.tsx", "src/main.tsx"}
    for name, code in files.items():
        (web / name).write_text(code)
    for name in ("chatstream.js", "chatstream.d.ts"):  # the tutorial's cp from the installed package
        shutil.copy(Path(flask_chatstream.__file__).parent / "static" / name, web / "src" / name)
    (web / "package.json").write_text('{"name": "web", "private": true, "type": "module"}\n')
    (web / "node_modules").symlink_to(ROOT / "examples" / "node_modules")  # react, RTK, vite, typescript
    for command in (["tsc", "--noEmit", "-p", "."], ["vite", "build", "--logLevel", "warn"]):
        done = subprocess.run([str(web / "node_modules" / ".bin" / command[0]), *command[1:]], cwd=web,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, " ".join(command) + "\n" + done.stdout[-3000:] + done.stderr[-3000:]
    (tmp_path / "app.py").write_text(file_snippet(DOCS / "tutorial.md", "app.py"))
    (tmp_path / "tutorial_site.py").write_text(SITE)  # the built page, served by the same Flask app

    with StandInServer(Script(reply="one two three four", delay=0.01, hold_after=2)) as upstream, \
            Gunicorn("tutorial_site:app", env={"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url,
                                      "PYTHONPATH": str(tmp_path)}) as server:
        page.goto(server.url + "/")
        page.get_by_label("Message").fill("Hi")
        page.get_by_role("button", name="Send").click()
        answer = page.locator("p.assistant")
        answer.filter(has_text="one two").wait_for()
        assert upstream.stats.finished == 0  # the words are on the page while the model is held
        assert page.get_by_role("button", name="Stop").is_enabled()
        upstream.release()
        answer.filter(has_text="one two three four").wait_for()
        page.get_by_role("button", name="Send").and_(page.locator(":enabled")).wait_for()

        upstream.reset()  # the counters to zero, the gate closed again
        upstream.script = Script(reply="five six seven eight", delay=0.01, hold_after=2)
        page.get_by_label("Message").fill("Again")
        page.get_by_role("button", name="Send").click()
        answer.nth(1).filter(has_text="five six").wait_for()
        page.get_by_role("button", name="Stop").click()
        upstream.wait_for(lambda stats: stats.cancelled == 1)  # the server closed the model's stream
        assert upstream.stats.finished == 0
        assert "seven" not in answer.nth(1).inner_text()
        # What the tutorial says the page shows after Stop: the words so far, Send back, and no error.
        page.get_by_role("button", name="Send").and_(page.locator(":enabled")).wait_for()
        assert answer.nth(1).inner_text() == "Assistant: five six" and page.get_by_role("alert").count() == 0


SITE = '''"""The tutorial's app.py, serving the tutorial's built page (web/dist) on the same origin."""
from pathlib import Path

from flask import send_from_directory

from app import app

DIST = Path(__file__).parent / "web" / "dist"
app.add_url_rule("/", "page", lambda: send_from_directory(DIST, "index.html"))
app.add_url_rule("/assets/<path:name>", "assets", lambda name: send_from_directory(DIST / "assets", name))
'''


def test_the_readme_is_a_front_door() -> None:
    """At most 250 lines, with the picture, the two commands, and links into the manual that resolve."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert '<img src="docs/screenshots/demo-streaming.gif"' in readme
    assert "make demo " in readme and "make test " in readme
    links = re.findall(r'\]\(([^)#]+?)(?:#[^)]*)?\)|src="([^"]+)"', readme)
    local = [a or b for a, b in links if not (a or b).startswith(("http://", "https://"))]
    assert len(local) >= 20
    for target in local:
        assert (ROOT / target).exists(), target


def test_every_error_code_is_in_the_errors_reference() -> None:
    """chatstream.js's table holds every code the relay sends (test_js_client ties it to the package)."""
    source = (ROOT / "flask_chatstream" / "static" / "chatstream.js").read_text()
    start = source.index("const ERROR_TEXT = {")
    codes = set(re.findall(r"^  ([a-z_]+): ", source[start:source.index("};", start)], re.MULTILINE))
    page = (DOCS / "reference" / "errors.md").read_text()
    every = page[page.index("## Every code"):]
    assert len(codes) >= 40
    assert not {code for code in codes if f"`{code}`" not in every}


def test_the_readmes_performance_figures_are_the_gates_last_run() -> None:
    """The README's figures come from bench/results/check.md, which `make bench-check` writes: a claim
    that no run made, or an old run's, fails here."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    table = (ROOT / "bench" / "results" / "check.md").read_text()

    def cell(row: str, side: str) -> str:
        [line] = [line for line in table.splitlines() if line.startswith(f"| {row}")]
        header = next(line for line in table.splitlines() if line.startswith("| goal |"))
        return line.split("|")[header.split("|").index(f" {side} ")].strip()

    per_request = cell("CPU per request", "chatstream")
    per_chunk = cell("CPU per chunk", "chatstream")
    assert f"{per_request}x its CPU per request and {per_chunk}x per chunk" in readme
    kb, naive_kb = cell("memory per open stream", "chatstream"), cell("memory per open stream", "naive")
    assert f"{kb} KB per open stream to its {naive_kb} KB" in readme
    p99, naive_p99 = cell("TTFB p99, 1,500 arrivals", "chatstream"), cell("TTFB p99, 1,500 arrivals", "naive")
    assert f"p99 of {p99} s, where the usual hand-written relay takes {naive_p99} s" in readme


def test_the_performance_page_shows_the_gates_last_run() -> None:
    table = (ROOT / "bench" / "results" / "check.md").read_text().split("\n\nPer run")[0].strip()
    assert table in (DOCS / "explanation" / "performance.md").read_text()
