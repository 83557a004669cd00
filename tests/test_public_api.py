from __future__ import annotations

import pytest

import flask_chatstream
from flask_chatstream import BudgetUnavailable, ChatStreamError, RequestError, ResumeUnavailable, UpstreamError


def test_exported_names() -> None:
    assert sorted(flask_chatstream.__all__) == [
        "AfterStream", "BeforeUpstream", "BodyTimeout", "BudgetExceeded", "BudgetUnavailable", "ChatBlueprint", "ChatRequest", "ChatResult", "ChatStreamError",
        "ClientKey", "ConfigError", "FormatNotAcceptable", "MayResume", "MessageMetadata", "Options", "RequestError",
        "RequestTooLarge", "ResumeUnavailable", "Settings", "StopReason", "StreamNotFound", "StreamTruncated", "TokenBudget", "TooManyReaders",
        "TooManyStreams", "ToolCall", "ToolError", "ToolStepsExhausted", "UnsupportedContentType", "UpstreamAuthError",
        "UpstreamError", "UpstreamInterrupted", "UpstreamMalformed", "UpstreamRateLimited", "UpstreamRejected",
        "UpstreamTimeout", "UpstreamUnavailable", "WrongMethod", "create_blueprint", "emit", "parsed_arguments",
        "patch_state", "set_state", "warm_up",
    ]
    for name in flask_chatstream.__all__:
        assert hasattr(flask_chatstream, name)


@pytest.mark.parametrize(("old", "new"), [("MethodNotAllowed", "WrongMethod"), ("NotAcceptable", "FormatNotAcceptable"),
                                          ("RequestTimeout", "BodyTimeout"),
                                          ("UnsupportedMediaType", "UnsupportedContentType")])
def test_the_errors_named_as_werkzeugs_are_renamed_and_the_old_names_warn(old: str, new: str) -> None:
    """Hooks raise werkzeug's MethodNotAllowed beside ours: ours have names of their own now, and the old
    names still work for one release, each use with a DeprecationWarning that names the new one."""
    import werkzeug.exceptions

    assert hasattr(werkzeug.exceptions, old) and not hasattr(werkzeug.exceptions, new)
    with pytest.warns(DeprecationWarning, match=f"{old} is renamed {new}"):
        error = getattr(flask_chatstream, old)
    assert error is getattr(flask_chatstream, new)
    assert old not in flask_chatstream.__all__
    with pytest.warns(DeprecationWarning, match=f"{old} is renamed {new}"):
        exec(f"from flask_chatstream import {old}", {})


def test_a_stop_reason_is_the_string_it_always_was() -> None:
    """``result.outcome == "client_left"``, a metrics label, a log line, a JSON code: the enum is its value."""
    import json

    from flask_chatstream import StopReason

    reason = StopReason.CLIENT_LEFT
    assert reason == "client_left" and "client_left" in {reason} and {"client_left": 1}[reason] == 1
    assert f"{reason}" == str(reason) == "%s" % reason == "client_left"
    assert json.dumps({"code": reason}) == '{"code": "client_left"}'


def test_what_a_result_can_carry_and_what_hooks_are_typed_as_is_public() -> None:
    from flask_chatstream import AfterStream, BeforeUpstream, ChatResult, ToolStepsExhausted

    result = ChatResult(id="x", request=None, outcome="error", error=ToolStepsExhausted())  # type: ignore[arg-type]
    assert isinstance(result.error, flask_chatstream.UpstreamError)

    def before(chat: flask_chatstream.ChatRequest) -> None:
        return None

    hooks: list[BeforeUpstream] = [before]
    after: AfterStream = print
    assert hooks and after


def test_every_error_has_a_status_a_code_and_a_message() -> None:
    errors = [getattr(flask_chatstream, n) for n in flask_chatstream.__all__]
    errors = [e for e in errors if isinstance(e, type) and issubclass(e, ChatStreamError)]
    codes = set()
    for error in errors:
        instance = error()
        assert 400 <= instance.status < 600 and instance.message and instance.code
        # the client's fault, the model's, or the server's own store (resume, budgets)
        assert issubclass(error, (RequestError, UpstreamError)) or error in (ChatStreamError, ResumeUnavailable,
                                                                             BudgetUnavailable)
        codes.add(instance.code)
    assert len(codes) == len(errors)  # codes are distinct and stable


def test_the_package_reports_its_version_as_the_changelog_has_it() -> None:
    import re
    from importlib.metadata import version

    from .servers import ROOT

    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## (\d+\.\d+\.\d+) - \d{4}-\d\d-\d\d$", changelog, re.M)
    assert released and flask_chatstream.__version__ == released[0] == version("flask-chatstream")
