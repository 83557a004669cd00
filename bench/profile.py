"""Where a request's CPU and a stream's memory go, feature by feature, in one process.

    python -m bench.profile              # both parts, about a minute
    python -m bench.profile --cpu        # only the CPU per request of each feature
    python -m bench.profile --memory     # only the Python memory an open stream holds, by where it was made

The app is the README's (``create_blueprint()`` under ``/api``), called as a WSGI callable in this
process with gevent patched, as a worker runs it, against bench/upstream.py over loopback, so only
our side's costs are counted (no server, no client). For CPU, the same blueprint is registered on
several apps, each with one feature off, and they take turns in rounds of requests: each row is the
median over rounds of that app's CPU per one-chunk request, and what turning the feature off saves
is its difference from the app with everything on, measured in the same rounds. For memory,
tracemalloc compares the heap with streams held open against before, per stream, grouped by the
line of ours that made each block (or the first line outside us).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from flask import Flask  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from bench.run import upstream_server  # noqa: E402
from bench.upstream import Profile  # noqa: E402
from tests.servers import ROOT  # noqa: E402

PACKAGE = str(ROOT / "flask_chatstream")

VARIANTS: dict[str, dict[str, Any]] = {
    "everything on (the defaults)": {},
    "no tracing": {"CHATSTREAM_TRACING": False},
    "no metrics": {"CHATSTREAM_METRICS": False},
    "no shared state (:memory:)": {"CHATSTREAM_STATE_PATH": ":memory:"},
    "no stream log line": {},  # the same app; its logger is quiet while it runs
    "all of these off": {"CHATSTREAM_TRACING": False, "CHATSTREAM_METRICS": False,
                         "CHATSTREAM_STATE_PATH": ":memory:"},
}
QUIET = {"no stream log line", "all of these off"}


def log_to_nowhere() -> None:
    """The stream lines go to a file, as a worker's go to its log: written, then dropped."""
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
    logger = logging.getLogger("flask_chatstream")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def app_with(config: dict[str, Any]) -> Flask:
    from flask_chatstream import create_blueprint

    app = Flask("bench")
    app.config.update(config)
    app.register_blueprint(create_blueprint(model="gpt-4o-mini"), url_prefix="/api")
    return app


def chat(app: Flask, prompt: str) -> int:
    """One chat through the WSGI callable, read to its end: the number of body pieces."""
    environ = EnvironBuilder(path="/api/chat", query_string="format=text", method="POST", json={"content": prompt},
                             environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()
    statuses: list[str] = []
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))  # type: ignore[arg-type]
    pieces = sum(1 for _ in body)
    body.close()  # type: ignore[attr-defined]
    if not statuses or not statuses[0].startswith("200"):
        raise SystemExit(f"chat failed: {statuses}")
    return pieces


def cpu(rounds: int, per_round: int) -> str:
    from flask_chatstream._warmup import warm_up

    warm_up()
    stream_log = logging.getLogger("flask_chatstream")
    apps = {name: app_with(config) for name, config in VARIANTS.items()}
    prompt = Profile(chunks=1, gap=0.0).prompt()
    for app in apps.values():
        for _ in range(20):
            chat(app, prompt)
    spent: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            stream_log.disabled = name in QUIET
            started = time.process_time()
            for _ in range(per_round):
                chat(app, prompt)
            spent[name].append((time.process_time() - started) / per_round * 1e6)
        stream_log.disabled = False
    base = statistics.median(spent["everything on (the defaults)"])
    lines = ["| app | CPU µs per one-chunk request | saved against the defaults |", "|---|---|---|"]
    for name, values in spent.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.0f} | {base - median:+.0f} µs ({(base - median) / base:+.0%}) |")
    return "\n".join(lines)


def where(trace: tracemalloc.Traceback) -> str:
    ours = [frame for frame in trace if frame.filename.startswith(PACKAGE)]
    frame = ours[-1] if ours else trace[-1]
    return f"{os.path.relpath(frame.filename, ROOT if ours else Path(frame.filename).parent.parent)}:{frame.lineno}"


def memory(streams: int) -> str:
    from flask_chatstream._warmup import warm_up

    warm_up()
    app = app_with({})
    prompt = Profile(chunks=8, gap=1.0).prompt()  # open for 8 s
    gevent.joinall([gevent.spawn(chat, app, Profile(chunks=1, gap=0.0).prompt()) for _ in range(20)])
    tracemalloc.start(30)
    before = tracemalloc.take_snapshot()
    running = [gevent.spawn(chat, app, prompt) for _ in range(streams)]
    gevent.sleep(2.5)  # every stream has its first chunk and waits for the next
    held = tracemalloc.take_snapshot()
    tracemalloc.stop()
    gevent.joinall(running)
    by_site: dict[str, int] = {}
    for stat in held.compare_to(before, "traceback"):
        site = where(stat.traceback)
        by_site[site] = by_site.get(site, 0) + stat.size_diff
    total = sum(by_site.values()) / streams
    lines = [f"Python memory an open stream holds: **{total / 1024:.1f} KB** ({streams} streams held open; "
             "the greenlet's saved stack counts where it waits)", "",
             "| made at | bytes per stream |", "|---|---|"]
    for site, size in sorted(by_site.items(), key=lambda item: -item[1])[:20]:
        lines.append(f"| `{site}` | {size / streams:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--streams", type=int, default=300)
    args = parser.parse_args()
    both = not (args.cpu or args.memory)
    log_to_nowhere()
    with upstream_server() as url:
        os.environ["OPENAI_API_KEY"], os.environ["OPENAI_BASE_URL"] = "sk-bench", url
        if args.cpu or both:
            print(cpu(args.rounds, args.per_round), flush=True)
        if args.memory or both:
            print("\n" + memory(args.streams), flush=True)


if __name__ == "__main__":
    main()
