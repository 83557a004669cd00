"""The manual: ``make docs`` builds it with warnings as errors, and every Python snippet in it runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flask_chatstream import Settings
from flask_chatstream.testing import StandInServer

from .conftest import API_KEY
from .servers import ROOT
from .snippets import snippets

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
def test_every_python_snippet_runs(page: Path, _standin: StandInServer, tmp_path: Path) -> None:
    """The page's snippets, in order, in a fresh process whose environment points at the stand-in model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATSTREAM_", "PYTEST_", "OPENAI_"))}
    env.update(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=_standin.url, SECRET_KEY="a secret for the docs' snippets",
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
