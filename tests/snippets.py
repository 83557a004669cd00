"""Run the Python snippets of one page of the manual, as a reader would: ``python tests/snippets.py PAGE``.

A page's snippets run in order in one namespace, in the current directory, so a later snippet can use
what an earlier one defined. A snippet whose first line is ``# name.py`` (``name`` a module's name, so
not ``gunicorn.conf.py``, which runs as a snippet) is a file of its own: it is
written out first (so others can import it), then imported in its turn; a ``test_*.py`` file is run with
pytest, after the rest. A file in a folder (``# myapp/app.py``) is another project beside the page's:
written out, never imported by the page, and its tests run with pytest in that folder. Anything a
snippet raises fails the page, with the page's line in the message.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^( *)```python\n(.*?)^\1```$", re.MULTILINE | re.DOTALL)  # in a list item: indented
FILE_NAME = re.compile(r"# ((?:\w+/)*\w+\.py)\n")


@dataclass(frozen=True)
class Snippet:
    line: int  # of the page, where the code starts
    code: str

    @property
    def file_name(self) -> str | None:
        named = FILE_NAME.match(self.code)
        return named.group(1) if named else None


def snippets(page: Path) -> list[Snippet]:
    text = page.read_text()
    return [Snippet(text.count("\n", 0, found.start(2)) + 1, textwrap.dedent(found.group(2)))
            for found in FENCE.finditer(text)]


def file_snippet(page: Path, name: str) -> str:
    """The code of the page's one snippet that is the file ``name``."""
    [code] = [snippet.code for snippet in snippets(page) if snippet.file_name == name]
    return code


def run(page: Path) -> int:
    found = snippets(page)
    for snippet in found:
        if snippet.file_name:
            Path(snippet.file_name).parent.mkdir(parents=True, exist_ok=True)
            Path(snippet.file_name).write_text(snippet.code)
    sys.path.insert(0, str(Path.cwd()))
    page_module = types.ModuleType("page")  # a real module, as SQLAlchemy's annotations need
    sys.modules["page"] = page_module
    namespace = page_module.__dict__
    for snippet in found:
        name = snippet.file_name
        if name and (name.startswith("test_") or "/" in name):
            continue
        try:
            if name:
                importlib.import_module(name.removesuffix(".py"))
            else:
                # Padding makes tracebacks name the page's own line numbers.
                exec(compile("\n" * (snippet.line - 1) + snippet.code, str(page), "exec"), namespace)
        except BaseException:
            print(f"{page}:{snippet.line}: the snippet failed", file=sys.stderr)
            traceback.print_exc()
            return 1
    for snippet in found:
        name = snippet.file_name
        if name and Path(name).name.startswith("test_"):
            folder, test = Path(name).parent, Path(name).name
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=folder)
            if done.returncode != 0:
                print(f"{page}:{snippet.line}: {name} failed under pytest", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]).resolve()))
