"""``python -m flask_chatstream.testing``: the stand-in on its own, with its control API under ``/_standin/``."""

from __future__ import annotations

import argparse
import time

from .script import Script
from .server import StandInServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the OpenAI-compatible stand-in on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--reply", default=Script.reply)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--first-delay", type=float, default=0.2)
    args = parser.parse_args(argv)
    server = StandInServer(Script(reply=args.reply, delay=args.delay, first_delay=args.first_delay), port=args.port)
    print(f"stand-in OpenAI API on {server.url}", flush=True)
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
