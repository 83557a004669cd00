"""The host app's hands on a stream: what it gets before the upstream call and after the last byte.

``before_upstream`` hooks get the validated ``ChatRequest`` inside the request context, and may
return a changed one (``dataclasses.replace``), return ``None`` to keep it, or refuse with
``abort(...)``, a ``ChatStreamError`` or any ``HTTPException``. ``after_stream`` hooks get the
``ChatResult`` exactly once for every request that passed the ``before_upstream`` hooks, inside an app
context, after the client has its last byte. A hook that raises there is logged with its traceback
and changes nothing for the client or for later streams.

Hooks get plain data, never the relay's insides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    
from ._chat import ChatRequest, ChatResult

log = logging.getLogger("flask_chatstream")


BeforeUpstream = Callable[[ChatRequest], "ChatRequest | None"]
AfterStream = Callable[[ChatResult], None]


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

    __slots__ = ("_app", "_hooks", "_ran")

    def __init__(self, app: Flask, hooks: Sequence[AfterStream]) -> None:
        self._app = app
        self._hooks = hooks
        self._ran = False

    def __call__(self, result: ChatResult) -> None:
        if self._ran:
            return
        self._ran = True
        if not self._hooks:
            return
        with self._app.app_context():
            for hook in self._hooks:
                try:
                    hook(result)
                except Exception:
                    log.exception("after_stream hook %s failed for stream %s",
                                  getattr(hook, "__name__", hook), result.id)
