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
        for seq, n, wait in profile.bursts(rng):
            if seq:
                time.sleep(wait)
            yield "".join(token(seq + i) for i in range(n))

    return Response(generate(), mimetype="text/plain")
