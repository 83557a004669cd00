"""Tools that run only once a person says yes (``@bp.tool(needs_approval=True)``).

When the model calls such a tool the answer ends with the call and an approval request
(``tool_approval``; ``tool-approval-request`` in ``ui``) instead of running it. The next request
carries the conversation with that call in it, and the answers: in ``ui`` the tool part in state
``approval-responded`` (AI SDK 6's ``addToolApprovalResponse``); in AG-UI an interrupt (its id the
approval id) that the next run's ``resume`` answers: ``{"interruptId", "status": "resolved", "payload":
{"approved": ...}}``, where ``"cancelled"`` counts as denied (the tool does not run); elsewhere a body
field ``approvals: [{"approval_id": ..., "approved": true | false, "reason": ...}]``. The approved calls
run before the model is asked again; a denied one's result tells the model the user said no.

An approval cannot be forged. Its id is an HMAC, under the app's ``SECRET_KEY`` (and
``SECRET_KEY_FALLBACKS``, through itsdangerous, as Flask signs its session), of the call's id, tool
name and arguments. An answer whose id does not sign a call in the conversation's last assistant
message, with the arguments that message gives, is refused with 400 before anything runs; so is
one for a tool that needs no approval. The id is checked, not remembered: a client can send its own
approval again with the same call, which asks for what was approved once more (make such a tool
idempotent by its call id if that matters).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ContextManager

import orjson
from flask.sansio.app import App
from itsdangerous import Signer

from ._chat import DENIED, ChatRequest, ToolCall
from ._config import ConfigError
from ._emit import Sink
from ._errors import RequestError
from ._request.agui import is_agui_body
from ._tools import Report, Tool, ToolRun, parsed_arguments, run_calls


class ApprovalKey:
    """Signs approval requests and checks the answers, for one client: an approval id is bound to the
    client key of the request that was asked (another client holding the conversation cannot use it)."""

    def __init__(self, secret_keys: Sequence[str | bytes], client: str = "") -> None:
        keys = [key.encode() if isinstance(key, str) else key for key in secret_keys]
        self._signer = Signer(keys, salt="flask_chatstream.tool-approval", key_derivation="hmac",
                              digest_method=hashlib.sha256)
        self._client = client.encode()

    def approval_id(self, call: ToolCall) -> str:
        return "approval-" + self._signer.get_signature(self._payload(call)).decode()

    def signs(self, approval_id: str, call: ToolCall) -> bool:
        signature = approval_id.removeprefix("approval-").encode()
        return approval_id.startswith("approval-") and self._signer.verify_signature(self._payload(call), signature)

    def _payload(self, call: ToolCall) -> bytes:
        return b"\n".join([call.id.encode(), call.name.encode(), canonical(parsed_arguments(call.arguments)),
                           self._client])


def approval_key(app: App, tools: Mapping[str, Tool], client: str = "") -> ApprovalKey | None:
    """The key for the approvals of one client (its client key), if a tool needs approval: from the
    app's ``SECRET_KEY`` (and ``SECRET_KEY_FALLBACKS``, for a key being rotated out), or a
    ``ConfigError`` that says to set one."""
    needing = [name for name, tool in tools.items() if tool.needs_approval]
    if not needing:
        return None
    if not app.secret_key:
        raise ConfigError(f"Tool {needing[0]!r} needs approval, and approvals are signed with the app's "
                           "SECRET_KEY: set app.config['SECRET_KEY'] (as Flask's sessions need).")
    return ApprovalKey([*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key], client)


def canonical(value: Any) -> bytes:
    """JSON that is the same for the arguments the model wrote and for the input a browser sends back:
    sorted keys, and whole floats as integers (JavaScript writes ``1.0`` as ``1``)."""
    return orjson.dumps(_whole(value), option=orjson.OPT_SORT_KEYS)


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


@dataclass(frozen=True)
class Verdict:
    """A person's answer to one approval request."""

    approval_id: str
    approved: bool
    reason: str | None = None


def verdicts_in(body: Mapping[str, Any]) -> list[Verdict]:
    """The approval answers a request carries: ``approvals`` in the body, an AG-UI run's ``resume``, or
    the AI SDK's tool parts in state ``approval-responded`` in its last assistant message."""
    if body.get("resume") is not None and is_agui_body(body):
        found = body["resume"]
        if not isinstance(found, list):
            raise RequestError('"resume" must be a list of {"interruptId", "status", "payload"}.',
                               code="invalid_approval")
        return [_resumed(each, f"resume[{i}]") for i, each in enumerate(found)]
    if "approvals" in body:
        found = body["approvals"]
        if not isinstance(found, list):
            raise RequestError('"approvals" must be a list of {"approval_id", "approved"}.', code="invalid_approval")
        return [_verdict(each, f"approvals[{i}]") for i, each in enumerate(found)]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return []
    last = messages[-1]
    if not (isinstance(last, dict) and last.get("role") == "assistant" and isinstance(last.get("parts"), list)):
        return []
    answers = []
    for i, part in enumerate(last["parts"]):
        if isinstance(part, dict) and part.get("state") == "approval-responded":
            approval = part.get("approval")
            where = f"messages[{len(messages) - 1}].parts[{i}].approval"
            if not isinstance(approval, dict):
                raise RequestError(f"{where} must be {{id, approved}}.", code="invalid_approval")
            answers.append(_verdict({"approval_id": approval.get("id"), "approved": approval.get("approved"),
                                    "reason": approval.get("reason")}, where))
    return answers


def _resumed(value: Any, where: str) -> Verdict:
    """An AG-UI resume entry, as the answer to the approval its interrupt asked for."""
    if not isinstance(value, dict) or not isinstance(value.get("interruptId"), str):
        raise RequestError(f'{where} must be {{"interruptId", "status", "payload"}}.', code="invalid_approval")
    status, payload = value.get("status"), value.get("payload")
    if status == "cancelled":
        return Verdict(value["interruptId"], False)
    if status != "resolved" or not isinstance(payload, dict):
        raise RequestError(f'{where}: an approval is resolved with a payload {{"approved": true | false}}, '
                           'or "cancelled".', code="invalid_approval")
    return _verdict({"approval_id": value["interruptId"], "approved": payload.get("approved"),
                     "reason": payload.get("reason")}, where)


def _verdict(value: Any, where: str) -> Verdict:
    if not isinstance(value, dict):
        raise RequestError(f'{where} must be {{"approval_id", "approved"}}.', code="invalid_approval")
    approval_id, approved, reason = value.get("approval_id"), value.get("approved"), value.get("reason")
    if not isinstance(approval_id, str) or not isinstance(approved, bool):
        raise RequestError(f"{where} needs an approval id (a string) and approved (true or false).",
                           code="invalid_approval")
    if reason is not None and not isinstance(reason, str):
        raise RequestError(f"{where}.reason must be a string.", code="invalid_approval")
    return Verdict(approval_id, approved, reason[:1000] if reason else None)


def decide(verdicts: Iterable[Verdict], chat: ChatRequest, tools: Mapping[str, Tool], key: ApprovalKey | None
           ) -> list[tuple[ToolCall, Verdict]]:
    """Each answer with the call it approves or denies: an open call (one without a result yet) of the
    conversation's last assistant message, of a tool that needs approval, whose id the answer's signs.
    Anything else is a ``RequestError``."""
    verdicts = list(verdicts)
    if not verdicts:
        return []
    open_calls = _open_calls(chat.messages)
    decided: list[tuple[ToolCall, Verdict]] = []
    for verdict in verdicts:
        call = next((c for c in open_calls if key is not None and key.signs(verdict.approval_id, c)), None)
        tool = tools.get(call.name) if call is not None else None
        if call is None or tool is None or not tool.needs_approval:
            raise RequestError("An approval does not match a tool call this server asked about, with these arguments.",
                               code="invalid_approval")
        if any(call is earlier for earlier, _ in decided):
            raise RequestError("A tool call was answered twice.", code="invalid_approval")
        decided.append((call, verdict))
    return decided


def _open_calls(messages: Sequence[dict[str, Any]]) -> list[ToolCall]:
    """The tool calls of the last assistant message that no ``tool`` message after it answers."""
    index = len(messages) - 1
    while index >= 0 and messages[index].get("role") == "tool":
        index -= 1
    if index < 0 or messages[index].get("role") != "assistant":
        return []
    answered = {m.get("tool_call_id") for m in messages[index + 1:]}
    return [ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
            for c in messages[index].get("tool_calls") or () if c["id"] not in answered]


def go_on(chat: ChatRequest, decided: Sequence[tuple[ToolCall, Verdict]], tools: Mapping[str, Tool], *,
          timeout: float, max_output_chars: int, context: Callable[[], ContextManager[object]] | None,
          sink: Sink | None, report: Report | None = None) -> tuple[ChatRequest, list[ToolRun]]:
    """Before the model is asked: run the approved calls (at once, as a turn's calls run) and refuse the
    denied. The request with their results added, and the results."""
    if not decided:
        return chat, []
    approved = [call for call, verdict in decided if verdict.approved]
    for call in approved:
        if call.name not in tools:  # a hook took the tool away from this request
            raise RequestError(f"The conversation calls a tool that is not offered here: {call.name!r}.",
                               code="unknown_tool")
    ran = {run.call.id: run for run in run_calls(tools, approved, chat, timeout, max_output_chars,
                                                 stopped=lambda: False, context=context, sink=sink,
                                                 report=report)} if approved else {}
    runs = [ran[call.id] if verdict.approved else denied(call, verdict) for call, verdict in decided]
    return dataclasses.replace(chat, messages=[*chat.messages, *(run.message() for run in runs)]), runs


def denied(call: ToolCall, verdict: Verdict) -> ToolRun:
    """A denied call's result: what the model is told, as the tool's error."""
    reason = f" Their reason: {verdict.reason}" if verdict.reason else ""
    return ToolRun(call, parsed_arguments(call.arguments), error=DENIED + reason, denied=True)
