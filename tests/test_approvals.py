"""Tools that need a person's approval: the request for it, the answer in the next request (NDJSON's
``approvals``, the AI SDK's ``approval-responded`` tool parts), and approvals that cannot be forged.
(AI SDK 6's own client drives the same flows against gunicorn in tests/js/ai-sdk.test.mjs.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from flask_chatstream import ChatResult, ConfigError
from flask_chatstream._approvals import ApprovalKey, canonical
from flask_chatstream._chat import ToolCall
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .streams import answer_of, check_event_stream, events_of, ui_parts

SECRET = "a secret key for the tests"
CALL = {"id": "call_del", "name": "delete_file", "arguments": {"path": "notes.txt", "hard": True}}


def said(messages: list[dict[str, Any]]) -> str:
    """The stand-in's answer: what the tool results it was given say."""
    return " | ".join(m["content"] for m in messages if m["role"] == "tool") or "nothing to report"


def approval_app(upstream: StandInServer, config: dict[str, Any] | None = None, api: str = "chat"
                 ) -> tuple[Flask, list[str], list[ChatResult]]:
    """An app with a tool that needs approval (it records what it deleted) and one that does not."""
    from flask_chatstream import create_blueprint

    upstream.script = Script(reply=said, tool_calls=[CALL])
    app = Flask(__name__)
    app.config.update({"SECRET_KEY": SECRET, **(config or {})})
    blueprint = create_blueprint(api_key=API_KEY, base_url=upstream.url, max_retries=0, first_event_wait=0.2, api=api)
    deleted: list[str] = []
    results: list[ChatResult] = []
    blueprint.after_stream(results.append)

    @blueprint.tool(needs_approval=True)
    def delete_file(path: str, hard: bool = False) -> str:
        """Delete a file."""
        deleted.append(path)
        return f"deleted {path}"

    @blueprint.tool
    def get_time() -> str:
        """The time."""
        return "noon"

    app.register_blueprint(blueprint, url_prefix="/api")
    return app, deleted, results


def post(app: Flask, body: dict[str, Any], fmt: str = "ndjson") -> Any:
    return app.test_client().post(f"/api/chat?format={fmt}", json=body, buffered=True)


def asked_for_approval(app: Flask, fmt: str = "ndjson") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The first request: the answer ends with the call waiting for approval. The conversation to send
    back (as a client keeps it), and the approval request."""
    response = post(app, {"content": "delete my notes"}, fmt)
    assert response.status_code == 200, response.data
    events = events_of(fmt, response.data)
    assert check_event_stream(events)["finish_reason"] == "tool_calls"
    [call] = [e for e in events if e["type"] == "tool_call"]
    [approval] = [e for e in events if e["type"] == "tool_approval"]
    assert events.index(approval) == events.index(call) + 1
    assert {k: approval[k] for k in ("id", "name", "arguments")} == {k: call[k] for k in ("id", "name", "arguments")}
    messages = [{"role": "user", "content": "delete my notes"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": call["id"], "type": "function",
                     "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]}]
    return messages, approval


@pytest.mark.parametrize("fmt", ["ndjson", "sse"])
def test_approved_the_tool_runs_and_the_answer_goes_on(upstream: StandInServer, fmt: str) -> None:
    app, deleted, results = approval_app(upstream)
    messages, approval = asked_for_approval(app, fmt)
    assert deleted == [] and upstream.stats.requests == 1  # asked, not run
    assert [(c.name, c.output) for c in results[0].tool_calls] == [("delete_file", None)]

    response = post(app, {"messages": messages, "approvals": [{"approval_id": approval["approval_id"], "approved": True}]},
                    fmt)
    events = events_of(fmt, response.data)
    assert check_event_stream(events)["finish_reason"] == "stop"
    assert [e["type"] for e in events][:2] == ["start", "tool_result"]  # the result first, then the model
    assert events[1] == {"type": "tool_result", "id": "call_del", "name": "delete_file", "output": "deleted notes.txt"}
    assert answer_of(events) == "deleted notes.txt" and deleted == ["notes.txt"]
    assert upstream.stats.bodies[-1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_del", "content": "deleted notes.txt"}
    assert [(c.name, c.output) for c in results[1].tool_calls] == [("delete_file", "deleted notes.txt")]


def test_on_the_responses_api_the_call_and_its_result_go_as_items(upstream: StandInServer) -> None:
    app, deleted, _ = approval_app(upstream, api="responses")
    messages, approval = asked_for_approval(app)
    response = post(app, {"messages": messages, "approvals": [{"approval_id": approval["approval_id"], "approved": True}]})
    assert answer_of(events_of("ndjson", response.data)) == "deleted notes.txt" and deleted == ["notes.txt"]
    items = upstream.stats.bodies[-1]["input"]
    assert [item.get("type") for item in items[-2:]] == ["function_call", "function_call_output"]
    assert items[-1] == {"type": "function_call_output", "call_id": "call_del", "output": "deleted notes.txt"}


def test_denied_the_tool_does_not_run_and_the_model_is_told(upstream: StandInServer) -> None:
    app, deleted, results = approval_app(upstream)
    messages, approval = asked_for_approval(app)
    response = post(app, {"messages": messages, "approvals": [
        {"approval_id": approval["approval_id"], "approved": False, "reason": "I need those."}]})
    events = events_of("ndjson", response.data)
    denial = "The user denied this tool call. Their reason: I need those."
    assert events[1] == {"type": "tool_result", "id": "call_del", "name": "delete_file", "error": denial, "denied": True}
    assert deleted == [] and answer_of(events) == json.dumps({"error": denial}, separators=(",", ":"))
    assert results[1].tool_calls[0].error == denial


def forge(approval: dict[str, Any], **change: Any) -> str:
    key = ApprovalKey([change.pop("secret", SECRET)])
    call = {"id": approval["id"], "name": approval["name"], "arguments": approval["arguments"], **change}
    return key.approval_id(ToolCall(call["id"], call["name"], json.dumps(call["arguments"])))


@pytest.mark.parametrize("forged", [
    lambda a: "approval-" + "A" * 43,  # made up
    lambda a: a["approval_id"][:-2],  # cut
    lambda a: forge(a, secret="another app's key"),  # signed, but not by this app
    lambda a: forge(a, arguments={"path": "/etc/passwd", "hard": True}),  # for other arguments
    lambda a: forge(a, id="call_other"),  # for a call the server did not ask about
    lambda a: 7,  # not even a string
])
def test_a_forged_approval_is_400_and_nothing_runs(upstream: StandInServer, forged: Any) -> None:
    app, deleted, results = approval_app(upstream)
    messages, approval = asked_for_approval(app)
    response = post(app, {"messages": messages, "approvals": [{"approval_id": forged(approval), "approved": True}]})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_approval"
    assert deleted == [] and upstream.stats.requests == 1


def test_an_approval_for_other_arguments_than_the_conversation_says_is_400(upstream: StandInServer) -> None:
    """The client changes the call's arguments in the history it sends back, keeping the approval id."""
    app, deleted, _ = approval_app(upstream)
    messages, approval = asked_for_approval(app)
    messages[1]["tool_calls"][0]["function"]["arguments"] = json.dumps({"path": "/", "hard": True})
    response = post(app, {"messages": messages, "approvals": [{"approval_id": approval["approval_id"], "approved": True}]})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_approval"
    assert deleted == []


def test_a_tool_that_needs_no_approval_cannot_be_run_through_one(upstream: StandInServer) -> None:
    """Even with a validly signed id: the server never asks about such a tool, so it never takes an answer."""
    app, _, _ = approval_app(upstream)
    messages = [{"role": "user", "content": "time?"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_t", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}]
    approval_id = ApprovalKey([SECRET]).approval_id(ToolCall("call_t", "get_time", "{}"))
    response = post(app, {"messages": messages, "approvals": [{"approval_id": approval_id, "approved": True}]})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_approval"


def test_one_call_answered_twice_is_400(upstream: StandInServer) -> None:
    app, deleted, _ = approval_app(upstream)
    messages, approval = asked_for_approval(app)
    twice = [{"approval_id": approval["approval_id"], "approved": True}] * 2
    response = post(app, {"messages": messages, "approvals": twice})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_approval"
    assert deleted == []


@pytest.mark.parametrize("approvals", [{}, [1], [{"approval_id": "x"}], [{"approval_id": "x", "approved": "yes"}],
                                       [{"approval_id": "x", "approved": True, "reason": 3}]])
def test_a_malformed_approvals_list_is_400(upstream: StandInServer, approvals: Any) -> None:
    app, _, _ = approval_app(upstream)
    response = post(app, {"content": "hi", "approvals": approvals})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_approval"
    assert upstream.stats.requests == 0


def test_an_approval_is_bound_to_the_client_it_was_asked_of(upstream: StandInServer) -> None:
    """Another client that has the conversation (a shared link, a support tool) cannot run the call as
    itself with the id: it was signed for the client key of the request that was asked."""
    app, deleted, _ = approval_app(upstream)
    messages, approval = asked_for_approval(app)  # asked of 127.0.0.1, the test client's address
    body = {"messages": messages, "approvals": [{"approval_id": approval["approval_id"], "approved": True}]}
    other = app.test_client().post("/api/chat?format=ndjson", json=body, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 400 and other.get_json()["error"]["code"] == "invalid_approval"
    assert deleted == [] and upstream.stats.requests == 1
    assert post(app, body).status_code == 200 and deleted == ["notes.txt"]  # its own client still can


def test_a_replayed_approval_asks_for_the_call_again(upstream: StandInServer) -> None:
    """The id is checked, not remembered (as documented): the same approval sent twice runs the call
    twice, so a tool whose second run would harm is made idempotent by its call id."""
    app, deleted, _ = approval_app(upstream)
    messages, approval = asked_for_approval(app)
    body = {"messages": messages, "approvals": [{"approval_id": approval["approval_id"], "approved": True}]}
    assert post(app, body).status_code == 200 and post(app, body).status_code == 200
    assert deleted == ["notes.txt", "notes.txt"]


def test_a_key_being_rotated_out_still_signs(upstream: StandInServer) -> None:
    """Flask's SECRET_KEY_FALLBACKS: an approval asked for under the old key is good under the new one."""
    app, deleted, _ = approval_app(upstream)
    messages, approval = asked_for_approval(app)
    rotated, _, _ = approval_app(upstream, {"SECRET_KEY": "the new key", "SECRET_KEY_FALLBACKS": [SECRET]})
    response = post(rotated, {"messages": messages, "approvals": [{"approval_id": approval["approval_id"], "approved": True}]})
    assert response.status_code == 200 and "deleted notes.txt" in answer_of(events_of("ndjson", response.data))


def test_without_a_secret_key_the_app_fails_at_registration(upstream: StandInServer) -> None:
    from flask_chatstream import create_blueprint

    blueprint = create_blueprint(api_key=API_KEY, base_url=upstream.url)
    blueprint.tool(lambda: "gone", name="wipe", description="Wipe it.", needs_approval=True)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Flask(__name__).register_blueprint(blueprint, url_prefix="/api")


def test_in_a_turn_with_other_tools_those_run_and_the_approval_waits(upstream: StandInServer) -> None:
    app, deleted, _ = approval_app(upstream)
    upstream.script = Script(reply=said, tool_calls=[{"id": "call_t", "name": "get_time", "arguments": {}}, CALL])
    events = events_of("ndjson", post(app, {"content": "go"}).data)
    assert [e["type"] for e in events] == ["start", "tool_call", "tool_call", "tool_approval", "tool_result", "done"]
    assert events[4]["output"] == "noon" and events[-1]["finish_reason"] == "tool_calls" and deleted == []
    assert upstream.stats.requests == 1


def test_the_ids_match_for_the_arguments_a_browser_sends_back() -> None:
    """JavaScript writes 2.0 as 2 and may order keys its own way: the id is the same."""
    key = ApprovalKey([SECRET])
    model = key.approval_id(ToolCall("c", "t", '{"b": 2.0, "a": [1.5, {"y": 1, "x": 0.0}]}'))
    assert key.signs(model, ToolCall("c", "t", '{"a":[1.5,{"x":0,"y":1}],"b":2}'))
    assert not key.signs(model, ToolCall("c", "t", '{"a":[1.5,{"x":0,"y":1}],"b":3}'))
    assert canonical({"b": 1.0, "a": "x"}) == b'{"a":"x","b":1}'


# ---- the AI SDK's shape ----------------------------------------------------------------------------


@pytest.mark.parametrize("approved", [True, False])
def test_ui_the_continuation_goes_on_in_the_same_message(upstream: StandInServer, approved: bool) -> None:
    """As useChat sends it after addToolApprovalResponse: the assistant message, its tool part
    approval-responded. The answer's start carries that message's id, so useChat adds to it."""
    app, deleted, _ = approval_app(upstream)
    question = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "delete my notes"}]}
    first = ui_parts(post(app, {"id": "chat-1", "messages": [question]}, "ui").data)
    assert [p["type"] for p in first] == [
        "start", "start-step", "tool-input-start", "tool-input-delta", "tool-input-available", "tool-approval-request",
        "finish-step", "finish"]
    request = first[5]
    assert request == {"type": "tool-approval-request", "approvalId": request["approvalId"], "toolCallId": "call_del"}
    assert first[-1]["finishReason"] == "tool-calls"

    assistant = {"id": first[0]["messageId"], "role": "assistant", "parts": [
        {"type": "step-start"},
        {"type": "tool-delete_file", "toolCallId": "call_del", "state": "approval-responded",
         "input": {"hard": True, "path": "notes.txt"}, "approval": {"id": request["approvalId"], "approved": approved}}]}
    then = ui_parts(post(app, {"id": "chat-1", "messages": [question, assistant], "trigger": "submit-message",
                               "messageId": assistant["id"]}, "ui").data)
    output = {"type": "tool-output-available", "toolCallId": "call_del", "output": "deleted notes.txt"} if approved \
        else {"type": "tool-output-denied", "toolCallId": "call_del"}
    assert then[:3] == [{"type": "start", "messageId": assistant["id"]}, output, {"type": "start-step"}]
    kinds = [p["type"] for p in then[3:]]
    assert kinds[0] == "text-start" and kinds[-3:] == ["text-end", "finish-step", "finish"]
    assert set(kinds[1:-3]) == {"text-delta"}
    assert deleted == (["notes.txt"] if approved else [])


def test_ui_a_forged_approval_is_400(upstream: StandInServer) -> None:
    app, deleted, _ = approval_app(upstream)
    assistant = {"id": "a1", "role": "assistant", "parts": [
        {"type": "tool-delete_file", "toolCallId": "call_del", "state": "approval-responded",
         "input": {"path": "notes.txt"}, "approval": {"id": "approval-made-up", "approved": True}}]}
    response = post(app, {"id": "c", "messages": [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "delete"}]}, assistant]}, "ui")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_approval"
    assert deleted == [] and upstream.stats.requests == 0


def test_ui_a_denied_call_in_the_history_tells_the_model_so(upstream: StandInServer) -> None:
    app, _, _ = approval_app(upstream)
    upstream.script = Script(reply=said)
    history = [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "delete"}]},
               {"id": "a1", "role": "assistant", "parts": [
                   {"type": "tool-delete_file", "toolCallId": "call_del", "state": "output-denied",
                    "input": {"path": "notes.txt"}, "approval": {"id": "approval-x", "approved": False}},
                   {"type": "step-start"}, {"type": "text", "text": "Fine, I kept it."}]},
               {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "thanks"}]}]
    assert post(app, {"id": "c", "messages": history}, "ui").status_code == 200
    assert upstream.stats.bodies[-1]["messages"][2] == {"role": "tool", "tool_call_id": "call_del",
                                        "content": '{"error":"The user denied this tool call."}'}
