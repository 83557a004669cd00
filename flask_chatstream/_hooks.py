"""The host app's hands on a stream: what it gets before the upstream call and after the last byte.

``before_upstream`` hooks get the validated ``ChatRequest`` inside the request context, and may
return a changed one (``dataclasses.replace``), return ``None`` to keep it, or refuse with
``abort(...)``, a ``ChatStreamError`` or any ``HTTPException``. ``after_stream`` hooks get the
``ChatResult`` exactly once for every request that passed the ``before_upstream`` hooks, inside an app
context, after the client has its last byte. A hook that raises there is logged with its traceback
and changes nothing for the client or for later streams. ``message_metadata`` hooks get what is known
so far (the ``ChatRequest`` as the answer starts, the ``ChatResult`` as it is done) and return a dict
for the client, or None; the same rules hold for what they raise.

Hooks get plain data, never the relay's insides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ._chat import ChatRequest, ChatResult

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("flask_chatstream")


BeforeUpstream = Callable[[ChatRequest], "ChatRequest | None"]
AfterStream = Callable[[ChatResult], None]
MessageMetadata = Callable[["ChatRequest | ChatResult"], "Mapping[str, Any] | None"]
MayResume = Callable[[str, str], bool]
"""Gets a stream id and the client key that started it, returns whether this request may read it."""
TokenBudget = Callable[[ChatRequest], "str | None"]
"""Gets the request about to be sent, returns this client's budget (``"50000/day"``) or None for no limit."""


def run_before_upstream(hooks: Sequence[BeforeUpstream], chat: ChatRequest) -> ChatRequest:
    """Run the hooks in registration order, each on what the one before returned."""
    for hook in hooks:
        changed = hook(chat)
        if changed is not None:
            if not isinstance(changed, ChatRequest):
                raise TypeError(
                    f"before_upstream hook {getattr(hook, '__name__', hook)!r} returned {type(changed).__name__}; "
                    "return a ChatRequest (dataclasses.replace(chat, ...)) or None to keep it."
                )
            chat = changed
    return chat


class AfterStreamHooks:
    """Runs the ``after_stream`` hooks for one stream, once, in an app context of ``app``."""

    __slots__ = ("_app", "_hooks", "_ran", "_observe")

    def __init__(self, app: Flask, hooks: Sequence[AfterStream],
                 observe: Callable[[ChatResult], None] | None = None) -> None:
        self._app = app
        self._hooks = hooks
        self._ran = False
        self._observe = observe
        """Told of the result first (the observer's ``ended``): metrics and traces."""

    def __call__(self, result: ChatResult) -> None:
        if self._ran:
            return
        self._ran = True
        if self._observe is not None:
            try:
                self._observe(result)
            except Exception:
                log.exception("observing stream %s failed", result.id)
        if not self._hooks:
            return
        with self._app.app_context():
            for hook in self._hooks:
                try:
                    hook(result)
                except Exception:
                    log.exception("after_stream hook %s failed for stream %s",
                                  getattr(hook, "__name__", hook), result.id)


class MessageMetadataHooks:
    """Runs the ``message_metadata`` hooks, in an app context of ``app``: their dicts, merged in
    registration order, or None. A hook that raises, or returns what is not a JSON object, is logged
    and left out."""

    __slots__ = ("_app", "_hooks")

    def __init__(self, app: Flask, hooks: Sequence[MessageMetadata]) -> None:
        self._app = app
        self._hooks = hooks

    def __call__(self, known: ChatRequest | ChatResult) -> dict[str, Any] | None:
        merged: dict[str, Any] = {}
        with self._app.app_context():
            for hook in self._hooks:
                name = getattr(hook, "__name__", hook)
                try:
                    value = hook(known)
                    if value is None:
                        continue
                    if not isinstance(value, Mapping):
                        raise TypeError(f"it returned {type(value).__name__}, not a dict or None")
                    orjson.dumps(value)  # what cannot go out as JSON never reaches the stream
                except Exception:
                    log.exception("message_metadata hook %s failed", name)
                    continue
                merged.update(value)
        return merged or None
