"""The benchmark suite still runs, with small numbers. It measures nothing here: benchmarks are not
tests, so this checks only that every contestant streamed every answer whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import ROOT

pytestmark = [pytest.mark.bench, pytest.mark.server]


@pytest.mark.timeout(600)  # a dozen servers start, one after another
def test_bench_quick_run(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=560)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    contestants = {"chatstream", "baseline", "floor", "minimal"}
    for scenario in ("per_request", "unsaturated", "busy", "realistic", "low_load"):
        assert set(report[scenario]) == contestants
        for name, figures in report[scenario].items():
            assert figures["complete"] == figures["streams"] > 0, (scenario, name, figures["errors"])
    assert set(report["sweep"]) == contestants
    for name, levels in report["sweep"].items():
        for level, figures in levels.items():
            assert figures["complete"] == int(level), (name, level, figures["errors"])
    assert [goal["key"] for goal in report["goals"]] == [
        "per_request", "per_chunk", "ttfb_p99_ms", "cpu_growth", "kb_per_stream"]
    assert (tmp_path / "chart.png").stat().st_size > 10_000
    text = (tmp_path / "latest.md").read_text()
    assert "| unsaturated | chatstream |" in text and "| CPU per one-chunk request, x naive |" in text


@pytest.mark.timeout(600)
def test_bench_check_quick_run(tmp_path: Path) -> None:
    """The gate (make bench-check) runs every side to the end and writes its table, with small numbers
    (where its goals do not apply)."""
    out = tmp_path / "check.md"
    result = subprocess.run([sys.executable, "-m", "bench.check", "--quick", "--runs", "1", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=560)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    goals = json.loads((ROOT / "bench" / "goals.json").read_text())["goals"]
    for goal in goals.values():  # a row for every goal, with a figure for every side
        [row] = [line for line in text.splitlines() if line.startswith(f"| {goal['figure']} (")]
        assert len(row.split("|")) == 2 + 1 + 5 + 3, row  # the figure, five sides, the goal, met, reachable
        assert row.endswith((" | yes |", " | no |")), row  # whether the bound meets it, in the same run
    assert "| chatstream | all on | naive | bound | floor |" in text
