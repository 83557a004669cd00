"""Run the benchmark suite: flask_chatstream against the usual recipe and the floor, same upstream.

    python -m bench.run            # the full suite, about 8 minutes; writes bench/results/
    python -m bench.run --quick    # a smoke run with small numbers (CI runs this)

Each contestant runs under gunicorn -c gunicorn.conf.py with one gevent worker, and is charged its
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
    needs_upstream: bool = True


CONTESTANTS = {
    "chatstream": Contestant("example_app:app", "/api/chat?format=text"),
    "baseline": Contestant("bench.baseline_app:app", "/api/chat"),
    "floor": Contestant("bench.floor_app:app", "/api/chat", needs_upstream=False),
}

PLAIN = Profile(chunks=100, gap=0.02)
REALISTIC = Profile(chunks=100, gap=0.02, jitter=0.5, burst=(1, 3), ttft=0.3, stall_chance=0.01, stall=0.5)
SCALE = Profile(chunks=10, gap=1.0)


@dataclass
class Config:
    runs: int = 3
    cpu_streams: int = 120
    cpu_concurrency: int = 20
    latency_streams: int = 5
    scale_levels: list[int] = field(default_factory=lambda: [100, 500, 1000, 2000])
    scale_ramp: float = 1.0
    plain: Profile = PLAIN
    realistic: Profile = REALISTIC
    scale: Profile = SCALE


QUICK = Config(runs=1, cpu_streams=6, cpu_concurrency=3, latency_streams=2, scale_levels=[20], scale_ramp=0.2,
               plain=Profile(chunks=10, gap=0.01), realistic=Profile(chunks=10, gap=0.01, jitter=0.5, burst=(1, 3)),
               scale=Profile(chunks=3, gap=0.2))


def cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


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
        yield server, server.worker_pids()[0]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def load(server: Gunicorn, name: str, profile: Profile, **kwargs: Any) -> list[StreamResult]:
    url = server.url + CONTESTANTS[name].path
    return asyncio.run(run_streams(url, profile.prompt(), profile.chunks, **kwargs))


def measured(server: Gunicorn, pid: int, name: str, profile: Profile, **kwargs: Any) -> dict[str, Any]:
    """Run a load, charging the worker's CPU and peak memory to it."""
    load(server, name, profile, streams=1)  # warm
    idle = rss_kb(pid)
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_kb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    before = cpu_ns(pid)
    started = time.monotonic()
    results = load(server, name, profile, **kwargs)
    wall = time.monotonic() - started
    cpu = cpu_ns(pid) - before
    done.set()
    sampler.join()
    ok = [r for r in results if r.ok]
    chunks = len(results) * profile.chunks
    return {
        "streams": len(results),
        "complete": len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:3],
        "wall_s": wall,
        "cpu_us_per_chunk": cpu / 1000 / chunks,
        "cpu_ms_per_request": cpu / 1e6 / len(results),
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


def suite(config: Config) -> dict[str, Any]:
    report: dict[str, Any] = {"config": {"runs": config.runs, "plain": config.plain.prompt(),
                                         "realistic": config.realistic.prompt(), "scale": config.scale.prompt(),
                                         "scale_gap_ms": config.scale.gap * 1000}}
    with upstream_server() as upstream:
        # All contestants run side by side and take turns, so each run compares them under the
        # same machine conditions; ratios are taken per run, then the median.
        with ExitStack() as stack:
            servers = {name: stack.enter_context(serve(name, upstream)) for name in CONTESTANTS}
            for scenario, profile, kwargs in (
                ("plain", config.plain, {"streams": config.cpu_streams, "concurrency": config.cpu_concurrency}),
                ("realistic", config.realistic,
                 {"streams": config.cpu_streams, "concurrency": config.cpu_concurrency}),
                ("low_load", config.plain, {"streams": config.latency_streams, "concurrency": 1}),
            ):
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTESTANTS}
                for _ in range(config.runs):
                    for name, (server, pid) in servers.items():
                        runs[name].append(measured(server, pid, name, profile, **kwargs))
                report[scenario] = {name: median_of(results) for name, results in runs.items()}
                for name, results in runs.items():
                    report[scenario][name]["x_floor"] = statistics.median(
                        r["cpu_us_per_chunk"] / f["cpu_us_per_chunk"] for r, f in zip(results, runs["floor"]))
                    report[scenario][name]["x_baseline"] = statistics.median(
                        r["cpu_ms_per_request"] / b["cpu_ms_per_request"] for r, b in zip(results, runs["baseline"]))
                    print(f"{scenario:10} {name:10} {[round(r['cpu_us_per_chunk']) for r in results]} us/chunk, "
                          f"median x floor {report[scenario][name]['x_floor']:.2f}", flush=True)

        report["scale"] = {}
        for name in CONTESTANTS:
            report["scale"][name] = {}
            for level in config.scale_levels:
                with serve(name, upstream) as (server, pid):
                    result = measured(server, pid, name, config.scale, streams=level, ramp=config.scale_ramp)
                report["scale"][name][str(level)] = result
                print(f"scale      {name:10} {level:5} streams: {result['complete']} whole, "
                      f"TTFB p99 {result['ttfb_ms'][99]:.0f} ms", flush=True)

        report["cold_start_ttfb_ms"] = {
            name: statistics.median(cold_start(name, upstream) for _ in range(config.runs))
            for name in ("chatstream", "baseline")
        }
    return report


def table(report: dict[str, Any]) -> str:
    rows = ["| scenario | contestant | CPU µs/chunk | × floor | CPU ms/request | × baseline | TTFB p50 ms | "
            "added latency p50 ms | complete |", "|---|---|---|---|---|---|---|---|---|"]
    for scenario in ("plain", "realistic", "low_load"):
        for name, r in report[scenario].items():
            rows.append(
                f"| {scenario} | {name} | {r['cpu_us_per_chunk']:.0f} | {r['x_floor']:.2f} | "
                f"{r['cpu_ms_per_request']:.2f} | {r['x_baseline']:.2f} | {r['ttfb_ms'][50]:.1f} | "
                f"{r['latency_ms'][50]:.2f} | {r['complete']}/{r['streams']} |")
    rows += ["", "| contestant | streams | complete | TTFB p50 / p99 ms | read gap p99 / max ms | "
             "worker KB per open stream | wall s |", "|---|---|---|---|---|---|---|"]
    for name, levels in report["scale"].items():
        for level, r in levels.items():
            rows.append(f"| {name} | {level} | {r['complete']} | {r['ttfb_ms'][50]:.0f} / {r['ttfb_ms'][99]:.0f} | "
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

    fig, (ttfb_ax, gap_ax, cpu_ax) = plt.subplots(1, 3, figsize=(15, 4.5))
    colors = {"chatstream": "tab:blue", "baseline": "tab:red", "floor": "tab:gray"}
    for name, levels in report["scale"].items():
        xs = [int(level) for level in levels]
        for q, style in ((50, "-"), (99, "--")):
            ttfb_ax.plot(xs, [levels[str(x)]["ttfb_ms"][q] for x in xs], style, color=colors[name], marker="o",
                         label=f"{name} p{q}")
            gap_ax.plot(xs, [levels[str(x)]["gap_ms"][q] for x in xs], style,
                        color=colors[name], marker="o", label=f"{name} p{q}")
    ttfb_ax.set(title="Time to first byte vs concurrent streams", xlabel="concurrent streams (one worker)",
                ylabel="ms")
    gap_ax.set(title=f"Gap between reads (upstream sends every {report['config']['scale_gap_ms']:.0f} ms)",
               xlabel="concurrent streams (one worker)", ylabel="ms")
    for ax in (ttfb_ax, gap_ax):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    scenarios = ["plain", "realistic"]
    width = 0.25
    for i, name in enumerate(CONTESTANTS):
        values = [report[s][name]["cpu_us_per_chunk"] for s in scenarios]
        bars = cpu_ax.bar([j + i * width for j in range(len(scenarios))], values, width, color=colors[name],
                          label=name)
        cpu_ax.bar_label(bars, fmt="%.0f", fontsize=8)
    cpu_ax.set_xticks([j + width for j in range(len(scenarios))], scenarios)
    cpu_ax.set(title="Worker CPU per relayed chunk", ylabel="µs")
    cpu_ax.legend(fontsize=8)
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
