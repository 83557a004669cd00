"""The package's layers, as setup.cfg's import contracts declare them: kept, able to fail, and the diagram
in ARCHITECTURE.md drawn from them (so the two cannot disagree)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- layers: drawn from setup.cfg's import contracts; tests/test_layers.py keeps them equal -->"
END = "<!-- end of layers -->"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())", "--no-cache"],
                          cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def layers() -> list[list[str]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["importlinter:contract:layers"]["layers"].strip().splitlines()
    return [[name.strip() for name in line.split("|")] for line in lines]


def diagram() -> str:
    """The layers, top first; each imports only those below it."""
    rows = ["    " + "   ".join(layer) for layer in layers()]
    return "```\n" + "\n      ▼\n".join(rows) + "\n```"


def test_the_import_contracts_are_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_backwards_import_breaks_the_contracts(tmp_path: Path) -> None:
    """The check can fail: a copy of the package in which the wire format imports the tools (a layer
    above it) and the request layer imports the relay is refused, naming both imports."""
    shutil.copytree(ROOT / "flask_chatstream", tmp_path / "flask_chatstream",
                    ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    with open(tmp_path / "flask_chatstream" / "_wire" / "sse.py", "a") as sse:
        sse.write("\nfrom .._tools import ToolRun\n")
    with open(tmp_path / "flask_chatstream" / "_request" / "chat.py", "a") as chat:
        chat.write("\n\ndef _late() -> None:\n    from .._stream.relay import Relay\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "flask_chatstream._wire.sse -> flask_chatstream._tools" in done.stdout
    assert "flask_chatstream._request.chat -> flask_chatstream._stream.relay" in done.stdout


def test_no_module_imports_itself_in_a_circle() -> None:
    """Not between siblings (the contracts see those), nor between a package and its own modules, at module
    level or inside functions: any cycle of the import graph at all."""
    graph = grimp.build_graph("flask_chatstream", exclude_type_checking_imports=True, cache_dir=None)
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(imported=module, importer=imported)
            assert chain is None, f"{module} imports {imported}, which imports it back: {' -> '.join(chain)}"


def test_every_module_of_the_package_is_in_a_layer() -> None:
    declared = {name for layer in layers() for name in layer}
    found = {path.stem if path.suffix == ".py" else path.name for path in (ROOT / "flask_chatstream").iterdir()
             if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()}
    assert declared == found


def test_architecture_draws_the_layers_of_the_contracts() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    assert BEGIN in text and END in text
    drawn = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert drawn == diagram(), f"ARCHITECTURE.md's layers should read:\n{diagram()}"


def _has(cls: type, member: str) -> bool:
    """A method, class attribute or annotated field of ``cls``, or an attribute its methods set."""
    import inspect

    return hasattr(cls, member) or member in getattr(cls, "__annotations__", {}) \
        or f"self.{member} " in inspect.getsource(cls)


def resolve(name: str) -> object:
    """``_stream.relay.Relay.prime``, ``_resume/redis.py``, ``_observe/``: the module, class or function named."""
    import importlib

    parts = [part for part in name.removesuffix(".py").replace("/", ".").split(".") if part]
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(["flask_chatstream", *parts[:cut]]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise LookupError(name)


def test_every_module_and_name_architecture_gives_exists() -> None:
    """Its module paths (``_upstream/client.py``, ``_request.body.read_body``) and the classes it names
    with their methods (``Generation.drain``): a rename that leaves the document behind fails here."""
    import re

    import flask_chatstream

    text = (ROOT / "ARCHITECTURE.md").read_text()
    paths = set(re.findall(r"(?<![\w.])(_[a-z_]+(?:[./][A-Za-z_]+)*(?:\.py|/)?)", text))
    paths -= {"__call__", "_let_go", "_read_on"}  # named as the methods they are, below
    missing = []
    for path in sorted(paths):
        try:
            resolve(path)
        except (LookupError, AttributeError):
            missing.append(path)
    classes = {name: cls for module in map(resolve, ["_stream.relay", "_stream.generation", "_stream.lifecycle",
                                                     "_stream.client_side", "_stream.after_leave", "_stream.tool_loop",
                                                     "_resume.replay", "_resume.journal", "_upstream.client"])
               for name, cls in vars(module).items() if isinstance(cls, type)}
    classes.update({name: getattr(flask_chatstream, name) for name in flask_chatstream.__all__})
    for cls, member in re.findall(r"`([A-Z]\w+)\.(\w+)`", text) + [("Relay", "_let_go"), ("Relay", "_read_on")]:
        if cls not in classes or not _has(classes[cls], member):
            missing.append(f"{cls}.{member}")
    assert not missing, f"ARCHITECTURE.md names what the package does not have: {missing}"


def test_the_development_page_lists_every_module() -> None:
    """docs/development.md's file list: every module of the package, and nothing that is not one."""
    import re

    text = (ROOT / "docs" / "development.md").read_text()
    block = text.split("## The files", 1)[1].split("```", 2)[1]
    listed, folder = set(), ""
    for line in block.splitlines()[2:]:
        match = re.match(r"( *)(\S+)", line)
        if not match:
            continue
        indent, name = len(match.group(1)), match.group(2)
        if indent == 2:
            folder = name if name.endswith("/") else ""
            if not name.endswith("/"):
                listed.add(name)
        elif indent == 4:
            listed.add(folder + name)
    found = {str(path.relative_to(ROOT / "flask_chatstream")) for path in (ROOT / "flask_chatstream").rglob("*.py")
             if path.name != "__init__.py" or path.parent.name in ("flask_chatstream", "testing")}
    found.add("static/chatstream.js")
    assert listed == found


def test_no_class_function_or_module_outgrows_its_limit() -> None:
    """No class over 250 lines, no function over 80, in the package and the example app; no module over 400
    unless its docstring says the one job that needs it ("One job")."""
    import ast

    too_big = []
    for path in [*sorted((ROOT / "flask_chatstream").rglob("*.py")), ROOT / "example_app.py"]:
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            limit = 250 if isinstance(node, ast.ClassDef) else 80 if isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if limit is not None and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > limit:
                too_big.append(f"{path.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
        if len(text.splitlines()) > 400 and "One job" not in (ast.get_docstring(tree) or ""):
            too_big.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines, and no one job said")
    assert not too_big
