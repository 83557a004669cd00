"""The Flask side, by job: the blueprint and its registration (``blueprint``), a blueprint's state in an
app (``state``), the views (``views``), and the responses they make (``responses``)."""

from __future__ import annotations

from .blueprint import ChatBlueprint, create_blueprint, remote_address
from .state import EXTENSION_KEY, BlueprintState, ClientKey, build_state

__all__ = ["EXTENSION_KEY", "BlueprintState", "ChatBlueprint", "ClientKey", "build_state", "create_blueprint",
           "remote_address"]
