"""A blueprint's state in an app: built in one place (``build_state``), at registration and again by
``testing.attach()``, and found by the views in ``app.extensions["chatstream"]``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app, request

from .._config import Settings
from .._errors import StreamNotFound
from .._health import Readiness
from .._observe import Observer, observer
from .._resume.journal import Journal
from .._resume.shared import SharedState
from .._stream.after_leave import FinishingLimit
from .._stream.limits import StreamLimit
from .._stream.registry import stream_tag
from .._upstream.client import Upstream

if TYPE_CHECKING:
    import openai

    from .blueprint import ChatBlueprint

EXTENSION_KEY = "chatstream"

ClientKey = Callable[[], str]
"""Names the client of a request, for ``max_streams_per_client`` and who may stop or resume a stream."""


@dataclass(frozen=True)
class BlueprintState:
    settings: Settings
    upstream: Upstream
    shared: SharedState
    readers: StreamLimit
    """Readers of one resumable stream, counted where ``shared.limit`` counts."""
    client_key: ClientKey
    blueprint: ChatBlueprint
    finishing: FinishingLimit
    """Its streams that read on for clients that left."""
    observer: Observer
    """What hears of its streams: metrics, traces (``_observe``)."""
    readiness: Readiness
    scope: str
    """The blueprint's name in the app (``api``, ``admin.chat``)."""
    tag: str
    """The first characters of every stream id it makes: a stream belongs to the blueprint that made it,
    and another blueprint of the app (with other hooks, another ``may_resume``) does not know its ids."""

    @property
    def limit(self) -> StreamLimit:
        return self.shared.limit

    @property
    def journal(self) -> Journal | None:
        return self.shared.journal

    def may_read(self, stream_id: str, owner: str) -> bool:
        decide = self.blueprint.may_resume_func
        return bool(decide(stream_id, owner)) if decide is not None else owner == self.client_key()

    def check_ours(self, stream_id: str) -> None:
        """A stream id of another blueprint (or none of ours) is not found here, whatever else knows it."""
        if not stream_id.startswith(self.tag):
            raise StreamNotFound()


def build_state(settings: Settings, client: openai.OpenAI | None, client_key: ClientKey, blueprint: ChatBlueprint,
                shared: SharedState, scope: str) -> BlueprintState:
    """A blueprint's state for an app: made at registration, and made again by ``testing.attach()``
    around the stand-in (with the same shared state), so both have the same parts."""
    upstream, observe = Upstream(settings, client), observer(settings)
    upstream.on_retry = observe.retried
    return BlueprintState(settings, upstream, shared, shared.limit.sibling(settings.max_readers_per_stream),
                          client_key, blueprint, FinishingLimit(settings.max_finishing_streams), observe,
                          Readiness(upstream.models, shared.check), scope, stream_tag(scope))


def current_state() -> BlueprintState:
    """The state of the blueprint serving this request."""
    try:
        return current_app.extensions[EXTENSION_KEY][request.blueprint]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError(
            "The chatstream blueprint has no state for this app. Did you register it with "
            "app.register_blueprint() on this app?"
        ) from None
