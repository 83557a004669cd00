"""The minimal floor: a bare WSGI callable under the same gunicorn and gevent, yielding the same bytes
on the same schedule, with no upstream and no Flask. What is left is the server's own cost."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.upstream import Profile, token


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    profile = Profile.from_prompt(json.loads(environ["wsgi.input"].read(length))["content"])
    rng = random.Random()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    for seq, n, wait in profile.bursts(rng):
        if seq:
            time.sleep(wait)
        yield "".join(token(seq + i) for i in range(n)).encode()
