"""A stand-in for OpenAI's chat completions and Responses APIs, for tests and offline demos.

It streams ``chat.completion.chunk`` events in OpenAI's exact SSE shape, ending
with ``data: [DONE]`` (``POST /v1/chat/completions``), or the Responses API's
events, numbered (``POST /v1/responses``), and can misbehave on request: an error status, a cut
mid-stream, a stall, malformed data, an in-stream error. It counts streams:
opened, open, finished, cut, and cancelled by the caller, which is how tests
prove that a relay stopped paying for tokens when its user left.

    with StandInServer(Script(reply="Hi there", delay=0.02)) as upstream:
        client = openai.OpenAI(api_key="sk-test", base_url=upstream.url)
        ...
        upstream.wait_for(lambda s: s.open == 0)

It is built on the standard library's threaded HTTP server with one thread per
connection, so it works unchanged under gevent's monkey-patching (the example
app runs it inside a gevent worker). ``python -m flask_chatstream.testing``
runs it on its own, with a small control API under ``/_standin/`` (``stats``, ``bodies``,
``messages``: each request's conversation as chat messages, whichever API it asked).
"""

from __future__ import annotations

from .faults import Cut, Fail, Fault, Hold, Malformed, Stall
from .script import Reply, Script, Stats, split_reply
from .server import STAND_IN_KEY, StandInServer
from .wire import chat_messages

__all__ = ["STAND_IN_KEY", "Cut", "Fail", "Fault", "Hold", "Malformed", "Reply", "Script", "Stall", "StandInServer",
           "Stats", "chat_messages", "split_reply"]
