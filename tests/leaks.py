"""The API key must appear in no log line of the whole session, ours or any server's.

Every test that talks to an upstream uses ``conftest.API_KEY``, and the stand-in quotes it back in its
error bodies the way OpenAI does, so a leak anywhere would show. ``conftest.pytest_sessionfinish``
runs this once every test has run, whatever their order; responses are checked where they are made.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def key_leaks(key: str, lines: Iterable[str], logs: Iterable[Path]) -> list[str]:
    """Every log line, and every server log file, that holds the key or its tail."""
    fragments = (key, key[-16:])
    leaks = [line for line in lines if any(f in line for f in fragments)]
    for path in logs:
        if path.exists() and any(f in path.read_text(errors="replace") for f in fragments):
            leaks.append(f"{path}: holds the key")
    return leaks
