"""A/B: this tree's blueprint against another git revision's, or against itself with other settings,
side by side on one upstream.

    python -m bench.compare --base HEAD~3            # per-request and unsaturated, 5 runs each
    python -m bench.compare --base main --runs 3 --scenarios per_request
    python -m bench.compare --env CHATSTREAM_RESUMABLE=1 --base-env CHATSTREAM_STATE_PATH=:memory:
    python -m bench.compare --format agui --base-format ui --scenarios unsaturated   # one format's cost against another's

Both run the README's app (bench/chatstream_app.py) under gunicorn with one gevent worker, each from
its own tree (the revision is checked out in a temporary git worktree). They take turns within each
run, so both meet the same machine; the figure reported is the median over runs of this tree's CPU
over the base's, measured in the same run. Use it to show that a change costs nothing per request
or per chunk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.run import CONTESTANTS, measured, scenarios, upstream_server, warm
from tests.servers import ROOT, free_port, wait_for_port


class Tree:
    """gunicorn serving the README's app from one source tree, looking like tests.servers.Gunicorn to
    the load generator."""

    def __init__(self, root: Path, upstream: str, settings_env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = (["-c", "python:flask_chatstream.gunicorn"] if (root / "flask_chatstream" / "gunicorn.py").exists()
                    else ["-c", "gunicorn.conf.py"])
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": upstream, "LOG_LEVEL": "warning",
               "GRACEFUL_TIMEOUT": "3", "PYTHONPATH": str(root),  # this tree's flask_chatstream, not the installed one
               **settings_env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *settings, "-w", "1", "-b", f"127.0.0.1:{self.port}",
             "bench.chatstream_app:app"], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        wait_for_port(self.port, self.process)
        self.pid = self._worker()

    def _worker(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            if children:
                warm(self.url + CONTESTANTS["chatstream"].path)  # booted and warmed up
                return int(children[0])
            time.sleep(0.05)
        raise RuntimeError("no worker")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@contextmanager
def worktree(revision: str | None) -> Iterator[Path]:
    if revision is None:
        yield ROOT
        return
    where = Path(tempfile.mkdtemp(prefix="chatstream-base-"))
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(where), revision], cwd=ROOT, check=True)
    try:
        yield where
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, check=False)


def compare(base: str | None, runs: int, keys: list[str], env: dict[str, str] | None = None,
            base_env: dict[str, str] | None = None, fmt: str = "text", base_fmt: str | None = None) -> dict[str, Any]:
    chosen = {key: scenario for key, scenario in scenarios().items() if key in keys}
    report: dict[str, Any] = {}
    with upstream_server() as upstream, worktree(base) as base_root, ExitStack() as stack:
        trees = {"this": Tree(ROOT, upstream, env or {}), "base": Tree(base_root, upstream, {**(env or {}),
                                                                                              **(base_env or {})})}
        for tree in trees.values():
            stack.callback(tree.stop)
        for key, scenario in chosen.items():
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            paths = {"this": f"/api/chat?format={fmt}", "base": f"/api/chat?format={base_fmt or fmt}"}
            for _ in range(runs):
                for name, tree in trees.items():
                    results[name].append(measured(tree, tree.pid, "chatstream", scenario.profile,  # type: ignore[arg-type]
                                                  path=paths[name], **scenario.kwargs()))
            figure = "cpu_ms_per_request" if key == "per_request" else "cpu_us_per_chunk"
            ratios = [a[figure] / b[figure] for a, b in zip(results["this"], results["base"])]
            report[key] = {
                "figure": figure,
                "this": statistics.median(r[figure] for r in results["this"]),
                "base": statistics.median(r[figure] for r in results["base"]),
                "ratio_median": statistics.median(ratios),
                "ratios": ratios,
                "busy": statistics.median(r["cpu_busy"] for r in results["this"]),
            }
            print(f"{key:12} {figure}: this {report[key]['this']:.3f}, base {report[key]['base']:.3f}, "
                  f"this/base per run {[round(r, 3) for r in ratios]}, median {report[key]['ratio_median']:.3f} "
                  f"(worker {report[key]['busy']:.0%} busy)", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="the git revision to compare against (default: this tree)")
    parser.add_argument("--env", nargs="*", default=[], help="KEY=VALUE for both sides (the app reads CHATSTREAM_*)")
    parser.add_argument("--base-env", nargs="*", default=[], help="KEY=VALUE for the base side only")
    parser.add_argument("--format", default="text", help="the wire format this side streams (?format=)")
    parser.add_argument("--base-format", help="the base side's format (default: the same)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenarios", nargs="+", default=["per_request", "unsaturated"])
    args = parser.parse_args()
    pairs = lambda items: dict(item.split("=", 1) for item in items)  # noqa: E731
    compare(args.base, args.runs, args.scenarios, pairs(args.env), pairs(args.base_env), args.format, args.base_format)


if __name__ == "__main__":
    main()
