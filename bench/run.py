"""Run the benchmark suite: flask_chatstream against the usual recipe and the floor, same upstream.

    python -m bench.run            # the full suite, about 25 minutes; writes bench/results/
    python -m bench.run --quick    # a smoke run with small numbers (CI runs this)

Each contestant runs under gunicorn -c python:flask_chatstream.gunicorn with one gevent worker, and is charged its
own worker's CPU (from /proc/<pid>/schedstat, in ns) and memory (VmRSS). Figures are medians over
--runs runs, and ratios are against the floor or baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import StreamResult, run_streams
from bench.upstream import Profile
from tests.servers import Gunicorn, free_port, wait_for_port

RESULTS = Path(__file__).with_name("results")


@dataclass(frozen=True)
class Contestant:
    app: str
    path: str


CONTESTANTS = {
    "chatstream": Contestant("bench.chatstream_app:app", "/api/chat?format=text"),
    "baseline": Contestant("bench.baseline_app:app", "/api/chat"),
    "floor": Contestant("bench.floor_app:app", "/api/chat"),
    "minimal": Contestant("bench.minimal_app:app", "/api/chat"),
}


@dataclass(frozen=True)
class Scenario:
    about: str
    profile: Profile
    streams: int
    concurrency: int | None = None
    """At most this many streams at once; None: each starts when its time comes (open loop)."""
    ramp: float = 0.0
    """Starts spread uniformly over this many seconds."""

    def kwargs(self) -> dict[str, Any]:
        return {"streams": self.streams, "concurrency": self.concurrency, "ramp": self.ramp}


def scenarios(scale: float = 1.0, chunks: int = 100, gap: float = 0.02) -> dict[str, Scenario]:
    """The scenarios, with ``scale`` times the streams (and the per-request ramp) for smoke runs."""
    n = lambda count: max(2, int(count * scale))  # noqa: E731
    return {
        "per_request": Scenario("one-chunk answers, 1,000 requests arriving over 10 s", Profile(chunks=1, gap=0.0),
                                n(1000), ramp=10.0 * scale),
        "unsaturated": Scenario("50 streams of 100 chunks 20 ms apart, starting over 1 s: the worker mostly idle",
                                Profile(chunks=chunks, gap=gap), n(50), ramp=1.0),
        "busy": Scenario("120 streams of 100 chunks 20 ms apart, 20 at a time: more streams, still far from saturation",
                         Profile(chunks=chunks, gap=gap), n(120), concurrency=n(20)),
        "realistic": Scenario("as busy, with jitter, bursts of 1-3 events, TTFT 0.3 s and stalls",
                              Profile(chunks=chunks, gap=gap, jitter=0.5, burst=(1, 3), ttft=0.3 * scale,
                                      stall_chance=0.01, stall=0.5 * scale), n(120), concurrency=n(20)),
        "low_load": Scenario("one stream at a time, 5 streams", Profile(chunks=chunks, gap=gap), n(5), concurrency=1),
    }


SWEEP = Profile(chunks=10, gap=1.0)


@dataclass
class Config:
    runs: int = 3
    scenarios: dict[str, Scenario] = field(default_factory=scenarios)
    sweep_levels: list[int] = field(default_factory=lambda: [50, 500, 1500, 3000])
    sweep_ramp: float = 3.0
    sweep_runs: int = 2
    sweep: Profile = SWEEP


QUICK = Config(runs=1, scenarios=scenarios(0.02, chunks=10, gap=0.01), sweep_levels=[5, 10], sweep_ramp=0.2, sweep_runs=1,
               sweep=Profile(chunks=3, gap=0.2))

GOALS = {
    "per_request": 0.4,  # CPU per one-chunk request, x the naive relay
    "per_chunk": 2.0,  # CPU per chunk unsaturated, x the Flask floor
    "ttfb_p99_ms": 500.0,  # at 1,500 streams
    "cpu_growth": 1.1,  # CPU per stream at the top level of the sweep, x at the bottom
    "kb_per_stream": 32.0,  # memory per open stream over the idle worker, at 1,500 streams
}


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of the process: the worker's own, and any OS threads it runs work in
    (gevent's threadpool, the shared state's writer). A thread's schedstat counts that thread only."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:  # a thread that ended just now
            pass
    return total


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@contextmanager
def upstream_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port", str(port)])
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait()


def warm(url: str) -> None:
    """One one-chunk answer from the chat at ``url``: the worker is up and past its warm start
    (``post_worker_init``: imports, the SDK's first use), which what a scenario measures then leaves out."""
    profile = Profile(chunks=1, gap=0.0)
    [result] = asyncio.run(run_streams(url, profile.prompt(), profile.chunks, streams=1))
    if not result.ok:
        raise RuntimeError(f"the warm-up answer failed: {result.error}")


@contextmanager
def serve(name: str, upstream: str) -> Iterator[tuple[Gunicorn, int]]:
    contestant = CONTESTANTS[name]
    env = {"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": upstream, "LOG_LEVEL": "warning"}
    with Gunicorn(contestant.app, env=env) as server:
        deadline = time.monotonic() + 20
        while not server.worker_pids():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: no worker")
            time.sleep(0.05)
        warm(server.url + contestant.path)
        yield server, server.worker_pids()[0]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def load(server: Gunicorn, name: str, profile: Profile, *, path: str | None = None, **kwargs: Any
         ) -> list[StreamResult]:
    url = server.url + (path or CONTESTANTS[name].path)
    return asyncio.run(run_streams(url, profile.prompt(), profile.chunks, **kwargs))


@contextmanager
def peak_rss(pid: int) -> Iterator[list[int]]:
    """The worker's highest RSS (KB) while the block runs, sampled every 50 ms: ``[0]`` of what it
    yields, read after the block."""
    peak = [rss_kb(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_kb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def measured(server: Gunicorn, pid: int, name: str, profile: Profile, *, path: str | None = None, **kwargs: Any
             ) -> dict[str, Any]:
    """Run a load, charging the worker's CPU and peak memory to it (at the contestant's path, or ``path``)."""
    load(server, name, profile, path=path, streams=1)  # warm
    idle = rss_kb(pid)
    with peak_rss(pid) as peak:
        before = cpu_ns(pid)
        started = time.monotonic()
        results = load(server, name, profile, path=path, **kwargs)
        wall = time.monotonic() - started
        cpu = cpu_ns(pid) - before
    ok = [r for r in results if r.ok]
    chunks = len(results) * profile.chunks
    return {
        "streams": len(results),
        "complete": len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:3],
        "wall_s": wall,
        "cpu_us_per_chunk": cpu / 1000 / chunks,
        "cpu_ms_per_request": cpu / 1e6 / len(results),
        "cpu_busy": cpu / 1e9 / wall,
        "ttfb_ms": {q: pct([r.ttfb for r in ok], q) * 1000 for q in (50, 90, 99)},
        "gap_ms": {q: pct([g for r in ok for g in r.gaps], q) * 1000 for q in (50, 99, 100)},
        "latency_ms": {q: pct([x for r in ok for x in r.latencies], q) * 1000 for q in (50, 99)},
        "idle_rss_kb": idle,
        "mem_kb_per_stream": (peak[0] - idle) / max(1, kwargs.get("concurrency") or len(results)),
    }


def cold_start(name: str, upstream: str) -> float:
    """TTFB of the first request a freshly started worker serves."""
    with serve(name, upstream) as (server, _):
        time.sleep(2.0)  # the worker has booted; what is left is per-request laziness
        [result] = load(server, name, Profile(chunks=1, gap=0.0), streams=1)
        return result.ttfb * 1000


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Key by key, the median across runs (nested dicts too)."""
    first = runs[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = median_of([r[key] for r in runs])
        elif isinstance(value, (int, float)):
            out[key] = statistics.median(r[key] for r in runs)
        else:
            out[key] = value
    return out


def ratio(runs: dict[str, list[dict[str, Any]]], name: str, key: str, against: str) -> float:
    """The median over runs of ``name``'s figure over ``against``'s in the same run."""
    return statistics.median(r[key] / b[key] for r, b in zip(runs[name], runs[against]))


def suite(config: Config) -> dict[str, Any]:
    report: dict[str, Any] = {"config": {
        "runs": config.runs, "sweep_runs": config.sweep_runs, "sweep_ramp_s": config.sweep_ramp,
        "sweep": config.sweep.prompt(), "sweep_gap_ms": config.sweep.gap * 1000,
        "scenarios": {key: {"about": s.about, "profile": s.profile.prompt(), **s.kwargs()}
                      for key, s in config.scenarios.items()},
    }}
    with upstream_server() as upstream:
        # All contestants run side by side and take turns, so each run compares them under the
        # same machine conditions; ratios are taken per run, then the median.
        with ExitStack() as stack:
            servers = {name: stack.enter_context(serve(name, upstream)) for name in CONTESTANTS}
            for key, scenario in config.scenarios.items():
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTESTANTS}
                for _ in range(config.runs):
                    for name, (server, pid) in servers.items():
                        runs[name].append(measured(server, pid, name, scenario.profile, **scenario.kwargs()))
                report[key] = {name: median_of(results) for name, results in runs.items()}
                for name in CONTESTANTS:
                    figures = report[key][name]
                    figures["x_floor"] = ratio(runs, name, "cpu_us_per_chunk", "floor")
                    figures["x_minimal"] = ratio(runs, name, "cpu_us_per_chunk", "minimal")
                    figures["x_baseline"] = ratio(runs, name, "cpu_ms_per_request", "baseline")
                    print(f"{key:12} {name:10} {[round(r['cpu_us_per_chunk']) for r in runs[name]]} us/chunk, "
                          f"x floor {figures['x_floor']:.2f}, x baseline {figures['x_baseline']:.2f}, "
                          f"worker busy {figures['cpu_busy']:.0%}", flush=True)

        # The sweep: a fresh worker per contestant and level, each level run sweep_runs times.
        report["sweep"] = {}
        for name in CONTESTANTS:
            report["sweep"][name] = {}
            for level in config.sweep_levels:
                results = []
                for _ in range(config.sweep_runs):
                    with serve(name, upstream) as (server, pid):
                        results.append(measured(server, pid, name, config.sweep, streams=level,
                                                ramp=config.sweep_ramp))
                result = report["sweep"][name][str(level)] = median_of(results)
                print(f"sweep        {name:10} {level:5} streams: {result['complete']:.0f} whole, "
                      f"TTFB p99 {result['ttfb_ms'][99]:.0f} ms, {result['cpu_ms_per_request']:.2f} ms CPU and "
                      f"{result['mem_kb_per_stream']:.1f} KB per stream", flush=True)

        report["cold_start_ttfb_ms"] = {
            name: statistics.median(cold_start(name, upstream) for _ in range(config.runs))
            for name in ("chatstream", "baseline")
        }
    report["goals"] = goals(report, config)
    return report


def goals(report: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    """Each goal of the performance issue: the figure for each contestant, the goal, met or not."""
    sweep = report["sweep"]
    levels = [str(level) for level in config.sweep_levels]
    at = "1500" if "1500" in levels else levels[-1]
    rows = []

    def row(figure: str, key: str, values: dict[str, float], goal: float, unit: str = "") -> None:
        rows.append({"figure": figure, "key": key, "values": values, "goal": goal, "unit": unit,
                     "met": values["chatstream"] <= goal})

    row("CPU per one-chunk request, x naive", "per_request",
        {n: report["per_request"][n]["x_baseline"] for n in CONTESTANTS}, GOALS["per_request"], "x")
    row("CPU per chunk, unsaturated, x Flask floor", "per_chunk",
        {n: report["unsaturated"][n]["x_floor"] for n in CONTESTANTS}, GOALS["per_chunk"], "x")
    row(f"TTFB p99 at {at} streams", "ttfb_p99_ms",
        {n: sweep[n][at]["ttfb_ms"][99] for n in CONTESTANTS}, GOALS["ttfb_p99_ms"], "ms")
    row(f"CPU per stream at {levels[-1]} streams, x at {levels[0]}", "cpu_growth",
        {n: sweep[n][levels[-1]]["cpu_ms_per_request"] / sweep[n][levels[0]]["cpu_ms_per_request"]
         for n in CONTESTANTS}, GOALS["cpu_growth"], "x")
    row(f"memory per open stream at {at} streams", "kb_per_stream",
        {n: sweep[n][at]["mem_kb_per_stream"] for n in CONTESTANTS}, GOALS["kb_per_stream"], "KB")
    return rows


def table(report: dict[str, Any]) -> str:
    names = list(CONTESTANTS)
    rows = ["| goal | " + " | ".join(names) + " | goal | met |", "|---|" + "---|" * (len(names) + 2)]
    for goal in report["goals"]:
        unit = goal["unit"]
        cells = [f"{goal['values'][n]:.2f}{unit}" if unit == "x" else f"{goal['values'][n]:.0f} {unit}" for n in names]
        target = f"<= {goal['goal']:g}{unit}" if unit == "x" else f"<= {goal['goal']:g} {unit}"
        rows.append(f"| {goal['figure']} | " + " | ".join(cells) + f" | {target} | {'yes' if goal['met'] else 'no'} |")
    rows += ["", "| scenario | contestant | CPU µs/chunk | × floor | × minimal | CPU ms/request | × baseline | "
             "worker busy | TTFB p50 / p99 ms | added latency p50 ms | complete |", "|---" * 11 + "|"]
    for key in report["config"]["scenarios"]:
        for name, r in report[key].items():
            rows.append(
                f"| {key} | {name} | {r['cpu_us_per_chunk']:.0f} | {r['x_floor']:.2f} | {r['x_minimal']:.2f} | "
                f"{r['cpu_ms_per_request']:.2f} | {r['x_baseline']:.2f} | {r['cpu_busy']:.0%} | "
                f"{r['ttfb_ms'][50]:.1f} / {r['ttfb_ms'][99]:.1f} | {r['latency_ms'][50]:.2f} | "
                f"{r['complete']:.0f}/{r['streams']:.0f} |")
    rows += ["", "| contestant | streams | complete | CPU ms per stream | worker busy | TTFB p50 / p99 ms | "
             "read gap p99 / max ms | KB per open stream | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, levels in report["sweep"].items():
        for level, r in levels.items():
            rows.append(f"| {name} | {level} | {r['complete']:.0f} | {r['cpu_ms_per_request']:.2f} | "
                        f"{r['cpu_busy']:.0%} | {r['ttfb_ms'][50]:.0f} / {r['ttfb_ms'][99]:.0f} | "
                        f"{r['gap_ms'][99]:.0f} / {r['gap_ms'][100]:.0f} | {r['mem_kb_per_stream']:.1f} | "
                        f"{r['wall_s']:.1f} |")
    cold = report["cold_start_ttfb_ms"]
    rows += ["", f"First request after a worker starts, TTFB: chatstream {cold['chatstream']:.0f} ms, "
                 f"baseline {cold['baseline']:.0f} ms."]
    return "\n".join(rows)


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ttfb_ax, cpu_ax), (mem_ax, chunk_ax) = axes
    colors = {"chatstream": "tab:blue", "baseline": "tab:red", "floor": "tab:gray", "minimal": "tab:green"}
    for name, levels in report["sweep"].items():
        xs = [int(level) for level in levels]
        for q, style in ((50, "-"), (99, "--")):
            ttfb_ax.plot(xs, [levels[str(x)]["ttfb_ms"][q] for x in xs], style, color=colors[name], marker="o",
                         label=f"{name} p{q}")
        cpu_ax.plot(xs, [levels[str(x)]["cpu_ms_per_request"] for x in xs], color=colors[name], marker="o",
                    label=name)
        mem_ax.plot(xs, [levels[str(x)]["mem_kb_per_stream"] for x in xs], color=colors[name], marker="o",
                    label=name)
    sweep = f"streams of {report['config']['sweep_gap_ms'] / 1000:g} s gaps, arriving over " \
            f"{report['config']['sweep_ramp_s']:g} s (one worker)"
    ttfb_ax.set(title="Time to first byte", xlabel=sweep, ylabel="ms", yscale="log")
    cpu_ax.set(title="Worker CPU per stream", xlabel=sweep, ylabel="ms", ylim=(0, None))
    mem_ax.set(title="Worker memory per open stream", xlabel=sweep, ylabel="KB", ylim=(0, None))
    mem_ax.axhline(GOALS["kb_per_stream"], color="black", linewidth=0.8, linestyle=":", label="goal")
    ttfb_ax.axhline(GOALS["ttfb_p99_ms"], color="black", linewidth=0.8, linestyle=":", label="goal (p99)")
    for ax in (ttfb_ax, cpu_ax, mem_ax):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    keys = [k for k in ("unsaturated", "busy", "realistic") if k in report]
    width = 0.2
    for i, name in enumerate(CONTESTANTS):
        values = [report[k][name]["cpu_us_per_chunk"] for k in keys]
        bars = chunk_ax.bar([j + i * width for j in range(len(keys))], values, width, color=colors[name], label=name)
        chunk_ax.bar_label(bars, fmt="%.0f", fontsize=8)
    chunk_ax.set_xticks([j + 1.5 * width for j in range(len(keys))], keys)
    chunk_ax.set(title="Worker CPU per relayed chunk", ylabel="µs")
    chunk_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run with small numbers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # inherited by the servers
    report = suite(QUICK if args.quick else Config())
    text = table(report)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=1))
    (args.out / "latest.md").write_text(text + "\n")
    chart(report, args.out / "chart.png")
    print(f"\nwrote {args.out}/latest.json, latest.md, chart.png")


if __name__ == "__main__":
    main()
