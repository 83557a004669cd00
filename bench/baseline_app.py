"""The usual hand-written recipe, kept as the benchmark's baseline: a Flask generator over
``client.chat.completions.create(stream=True)`` yielding ``chunk.choices[0].delta.content``."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Flask, Response, request
from openai import OpenAI

app = Flask(__name__)
client = OpenAI()  # OPENAI_API_KEY, OPENAI_BASE_URL


@app.post("/api/chat")
def chat() -> Response:
    data = request.get_json()
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": data["content"]}], stream=True
    )

    def generate() -> Iterator[str]:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return Response(generate(), mimetype="text/plain")
