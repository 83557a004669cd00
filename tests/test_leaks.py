from __future__ import annotations

from pathlib import Path

from .conftest import API_KEY
from .leaks import key_leaks


def test_the_check_finds_the_key_or_its_tail(tmp_path: Path) -> None:
    clean = tmp_path / "clean.log"
    clean.write_text("stream id=x outcome=done\n")
    dirty = tmp_path / "dirty.log"
    dirty.write_text(f"Incorrect API key provided: sk-...{API_KEY[-16:]}\n")
    assert key_leaks(API_KEY, ["fine", f"key={API_KEY}"], [clean]) == [f"key={API_KEY}"]
    assert key_leaks(API_KEY, ["fine"], [clean, dirty]) == [f"{dirty}: holds the key"]
    assert key_leaks(API_KEY, ["fine"], [clean, tmp_path / "never-written.log"]) == []
