"""The floor: the same server yielding the same tokens on the same schedule from a loop, with no
upstream at all. What is left is the cost of Flask, gunicorn and gevent writing the chunks."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from flask import Flask, Response, request

from bench.upstream import Profile, token

app = Flask(__name__)


@app.post("/api/chat")
def chat() -> Response:
    profile = Profile.from_prompt(request.get_json()["content"])
    rng = random.Random()

    def generate() -> Iterator[str]:
        seq = 0
        while seq < profile.chunks:
            n = min(rng.randint(*profile.burst), profile.chunks - seq)
            if seq:
                wait = profile.gap * n
                if profile.jitter:
                    wait *= rng.uniform(1 - profile.jitter, 1 + profile.jitter)
                time.sleep(wait)
            yield "".join(token(seq + i) for i in range(n))
            seq += n

    return Response(generate(), mimetype="text/plain")
