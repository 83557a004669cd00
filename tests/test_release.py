"""What a release ships: ``python -m build`` makes an sdist and a wheel that ``twine check`` accepts;
the wheel holds the package (every subpackage, the static client, the gunicorn settings, ``py.typed``)
and nothing from the tests, the examples or the bench; and the package's version is the changelog's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .servers import ROOT
from .test_install import COPY_IGNORE

pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` on a copy of this tree (its isolated build env comes from PyPI)."""
    where = tmp_path_factory.mktemp("dist")
    source = where / "source"
    shutil.copytree(ROOT, source, ignore=COPY_IGNORE)
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(where / "out"), str(source)],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return where / "out"


def test_build_makes_an_sdist_and_a_wheel_twine_accepts(dist: Path) -> None:
    import flask_chatstream

    version = flask_chatstream.__version__
    names = sorted(p.name for p in dist.iterdir())
    assert names == [f"flask_chatstream-{version}-py3-none-any.whl", f"flask_chatstream-{version}.tar.gz"]
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0 and checked.stdout.count("PASSED") == 2, checked.stdout + checked.stderr


def test_the_wheel_ships_the_package_and_nothing_else(dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    files = set(zipfile.ZipFile(wheel).namelist())
    package = {f for f in files if not f.startswith("flask_chatstream-")}  # without the .dist-info
    assert {"flask_chatstream/static/chatstream.js", "flask_chatstream/static/chatstream.d.ts",
            "flask_chatstream/gunicorn.py", "flask_chatstream/py.typed", "flask_chatstream/testing/__main__.py"} <= package
    shipped = {Path(f).parent.as_posix() for f in package if f.endswith("/__init__.py")}
    on_disk = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "flask_chatstream").rglob("__init__.py")}
    assert shipped == on_disk  # every subpackage, as the tree has them
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "flask_chatstream").rglob("*.py")}
    assert modules <= package
    assert all(f.startswith("flask_chatstream/") for f in package), sorted(package)
    assert not [f for f in package if re.search(r"(^|/)(tests|examples|bench|node_modules|__pycache__)/", f)]
