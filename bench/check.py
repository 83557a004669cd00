"""The performance gate: the figures that add up as features land, against the naive relay, in one run.

    make bench-check                  # python -m bench.check: 3 runs, about 10 minutes; exit 1 past a goal
    python -m bench.check --runs 5

Five sides run under gunicorn -c python:flask_chatstream.gunicorn with one gevent worker each, on one
upstream (bench/upstream.py): this project as the README runs it (every default), the same with
resumable streams, a stream cap and metrics on ("all on", reported beside it, not gated), the naive
relay (bench/baseline_app.py: the hand-written recipe), the bound (bench/bound_app.py: the least any
relay can do, one hand-written upstream exchange and a JSON parse per event, nothing else) and the
floor (bench/floor_app.py: the same chunks from a loop, no upstream). A goal that the bound does not
meet in the same run cannot be met by any relay on that machine: the table says so beside it.
Each run measures, for every side in turn:

- CPU per request: 1,000 one-chunk answers arriving over 10 s (long-lived workers, taking turns);
- CPU per chunk: 50 streams of 100 chunks 20 ms apart;
- memory: a fresh worker, warmed by one request, then 50 streams of 10 chunks 1 s apart arriving over
  1 s (the peak RSS), then 1,500 arriving over 3 s (the peak RSS, and the TTFB p99 against the 50's).

A worker's CPU is every thread's (/proc/<pid>/task/*/schedstat) and its memory VmRSS, sampled every
50 ms. Each goal's figure is the median over runs of the figure taken within each run, so a noisy
machine moves both sides of a ratio together. The goals are in bench/goals.json; the table is
printed and written to bench/results/check.md. This is a benchmark, not a test: it is not part of
make test, and it is run before a change to the request or chunk path is called done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import StreamResult, run_streams
from bench.run import RESULTS, cpu_ns, pct, peak_rss, rss_kb, upstream_server
from bench.upstream import Profile
from tests.servers import Gunicorn

GOALS = Path(__file__).with_name("goals.json")


@dataclass(frozen=True)
class Side:
    app: str
    path: str
    env: dict[str, str] = field(default_factory=dict)


SIDES = {
    "chatstream": Side("bench.chatstream_app:app", "/api/chat?format=text"),
    "all on": Side("bench.chatstream_app:app", "/api/chat?format=text",
                   {"CHATSTREAM_RESUMABLE": "1", "CHATSTREAM_MAX_STREAMS_PER_CLIENT": "100000",
                    "CHATSTREAM_METRICS": "1"}),
    "naive": Side("bench.baseline_app:app", "/api/chat"),
    "bound": Side("bench.bound_app:app", "/api/chat"),
    "floor": Side("bench.floor_app:app", "/api/chat"),
}

ONE_CHUNK = Profile(chunks=1, gap=0.0)


@dataclass(frozen=True)
class Loads:
    requests: int = 1000
    requests_over: float = 10.0
    chunked: Profile = Profile(chunks=100, gap=0.02)
    chunked_streams: int = 50
    open: Profile = Profile(chunks=10, gap=1.0)
    """Streams that stay open for about 10 s, for memory and the arrival tail."""
    few: int = 50
    many: int = 1500
    many_over: float = 3.0


QUICK = Loads(requests=20, requests_over=0.5, chunked=Profile(chunks=5, gap=0.01), chunked_streams=5,
              open=Profile(chunks=3, gap=0.2), few=5, many=20, many_over=0.3)
"""A smoke run (the tests run it): every side streams every answer whole; its figures mean nothing."""


@contextmanager
def serve(side: Side, upstream: str) -> Iterator[tuple[Gunicorn, int]]:
    env = {"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": upstream, "LOG_LEVEL": "warning", **side.env}
    with Gunicorn(side.app, env=env) as server:
        pid = server.worker_pids()[0]
        load(server, side, ONE_CHUNK, streams=1)  # booted, and warm
        yield server, pid


def load(server: Gunicorn, side: Side, profile: Profile, **kwargs: Any) -> list[StreamResult]:
    return asyncio.run(run_streams(server.url + side.path, profile.prompt(), profile.chunks, **kwargs))


def whole(results: list[StreamResult], what: str) -> None:
    """A figure counts only if every stream arrived whole."""
    broken = [r.error for r in results if not r.ok]
    if broken:
        raise SystemExit(f"{what}: {len(broken)} of {len(results)} streams broke ({sorted(set(broken))[:3]})")


def cpu_per(server: Gunicorn, pid: int, side: Side, profile: Profile, **kwargs: Any) -> tuple[float, float]:
    """Worker CPU (ns) per request and per chunk for one load."""
    before = cpu_ns(pid)
    results = load(server, side, profile, **kwargs)
    spent = cpu_ns(pid) - before
    whole(results, f"{side.app} {profile.prompt()}")
    return spent / len(results), spent / (len(results) * profile.chunks)


def memory(side: Side, upstream: str, loads: Loads) -> dict[str, float]:
    """A fresh worker: its RSS at rest, with 50 streams open, and with 1,500; the TTFB tail."""
    with serve(side, upstream) as (server, pid):
        time.sleep(1.0)
        rest = rss_kb(pid)
        with peak_rss(pid) as peak_few:
            few = load(server, side, loads.open, streams=loads.few, ramp=1.0)
        with peak_rss(pid) as peak_many:
            many = load(server, side, loads.open, streams=loads.many, ramp=loads.many_over)
        rss_few, rss_many = peak_few[0], peak_many[0]
    whole(few + many, f"{side.app} open streams")
    p99 = lambda results: pct([r.ttfb for r in results], 99)  # noqa: E731
    return {"rest_mb": rest / 1024, "rss_50_mb": rss_few / 1024, "rss_1500_mb": rss_many / 1024,
            "kb_per_stream": (rss_many - rss_few) / (loads.many - loads.few), "ttfb_p99_50_s": p99(few),
            "ttfb_p99_1500_s": p99(many), "tail": p99(many) - p99(few)}


def one_run(upstream: str, loads: Loads) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {name: {} for name in SIDES}
    with ExitStack() as stack:  # long-lived workers, taking turns, for CPU
        servers = {name: stack.enter_context(serve(side, upstream)) for name, side in SIDES.items()}
        for name, (server, pid) in servers.items():
            figures[name]["ms_per_request"] = cpu_per(server, pid, SIDES[name], ONE_CHUNK, streams=loads.requests,
                                                      ramp=loads.requests_over)[0] / 1e6
        for name, (server, pid) in servers.items():
            figures[name]["us_per_chunk"] = cpu_per(server, pid, SIDES[name], loads.chunked,
                                                    streams=loads.chunked_streams, ramp=1.0)[1] / 1e3
    for name, side in SIDES.items():
        figures[name].update(memory(side, upstream, loads))
    return figures


def derived(run: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    """The goals' figures for one side in one run."""
    mine, naive = run[name], run["naive"]
    return {"per_request": mine["ms_per_request"] / naive["ms_per_request"],
            "per_chunk": mine["us_per_chunk"] / naive["us_per_chunk"],
            "rss_over_naive": mine["rss_50_mb"] - naive["rss_50_mb"],
            "kb_per_stream": mine["kb_per_stream"], "tail": mine["tail"]}


def report(runs: list[dict[str, dict[str, float]]], goals: dict[str, Any]) -> tuple[str, bool]:
    median = lambda values: statistics.median(values)  # noqa: E731
    met = True
    lines = ["| goal | " + " | ".join(SIDES) + " | goal | met | the bound meets it |",
             "|---|" + "---|" * (len(SIDES) + 3)]
    for key, goal in goals.items():
        values = {name: median([derived(run, name)[key] for run in runs]) for name in SIDES}
        ok = values["chatstream"] <= goal["max"]
        met &= ok
        digits = 2 if goal["unit"] in ("x", "s") else 1
        cells = [f"{values[name]:.{digits}f}" for name in SIDES]
        lines.append(f"| {goal['figure']} ({goal['unit']}) | " + " | ".join(cells)
                     + f" | <= {goal['max']:g} | {'yes' if ok else 'NO'} | {'yes' if values['bound'] <= goal['max'] else 'no'} |")
    lines += ["", "| figure (median of " + str(len(runs)) + " runs) | " + " | ".join(SIDES) + " |",
              "|---|" + "---|" * len(SIDES)]
    for key, about in (("ms_per_request", "CPU ms per one-chunk request"), ("us_per_chunk", "CPU µs per chunk"),
                       ("rest_mb", "RSS at rest, MB"), ("rss_50_mb", "RSS with 50 streams open, MB"),
                       ("rss_1500_mb", "RSS with 1,500 streams open, MB"), ("kb_per_stream", "KB per open stream"),
                       ("ttfb_p99_50_s", "TTFB p99, 50 streams, s"), ("ttfb_p99_1500_s", "TTFB p99, 1,500 arrivals, s")):
        digits = 3 if key.endswith(("_s", "request")) else 1
        lines.append(f"| {about} | " + " | ".join(f"{median([run[name][key] for run in runs]):.{digits}f}"
                                                   for name in SIDES) + " |")
    lines += ["", "Per run, chatstream: " + "; ".join(
        ", ".join(f"{key} {value:.3g}" for key, value in derived(run, "chatstream").items()) for run in runs)]
    return "\n".join(lines), met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run with small numbers: no goal applies")
    parser.add_argument("--out", type=Path, default=RESULTS / "check.md")
    args = parser.parse_args()
    loads = QUICK if args.quick else Loads()
    goals = json.loads(GOALS.read_text())["goals"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # the servers inherit it
    runs = []
    with upstream_server() as upstream:
        for i in range(args.runs):
            started = time.monotonic()
            runs.append(one_run(upstream, loads))
            print(f"run {i + 1} of {args.runs}: {time.monotonic() - started:.0f} s; chatstream "
                  + ", ".join(f"{k} {v:.3g}" for k, v in derived(runs[-1], "chatstream").items()), flush=True)
    text, met = report(runs, goals)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"{text}\n")
    if not met and not args.quick:
        print("\nbench-check: a goal is not met (bench/goals.json)", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
