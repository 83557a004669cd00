"""Instructions per request of one setting against another, counted by valgrind (callgrind): exact and
repeatable whatever else the machine is doing, where CPU time on a shared machine is not.

    python -m bench.instructions CHATSTREAM_TOKEN_BUDGET=1000000000/day     # against the defaults

Each side is counted in a process of its own, twice (a few requests, then many more, both after the
warm start), so what the process costs once cancels; the README's app is called as a WSGI callable
with gevent patched, as ``bench.profile`` does. About ten minutes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

FEW, MANY = 50, 250


def run(requests: int, settings: dict[str, str], upstream: str) -> int:
    """The instructions of a process that serves ``requests`` one-chunk chats (after its warm start)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, **settings, "OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": "sk-bench"}
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m",
                        "bench.instructions", "--serve", str(requests)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        summary = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
        assert summary is not None
        return int(summary.group(1))


def serve(requests: int) -> None:
    from gevent import monkey

    monkey.patch_all()
    import logging

    from bench.profile import app_with, chat
    from bench.upstream import Profile
    from flask_chatstream._warmup import warm_up

    logging.getLogger("flask_chatstream").disabled = True
    app = app_with({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
    warm_up()
    prompt = Profile(chunks=1, gap=0.0).prompt()
    for _ in range(20 + requests):
        chat(app, prompt)


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
        return
    settings = dict(arg.split("=", 1) for arg in sys.argv[1:])
    from bench.run import upstream_server

    with upstream_server() as upstream:
        per = {}
        for name, side in (("defaults", {}), ("with " + " ".join(sys.argv[1:]), settings)):
            few, many = run(FEW, side, upstream), run(MANY, side, upstream)
            per[name] = (many - few) / (MANY - FEW)
            print(f"{name}: {per[name]:,.0f} instructions per request")
    base, this = per.values()
    print(f"ratio: {this / base:.4f}")


if __name__ == "__main__":
    main()
