from __future__ import annotations

import flask_chatstream
from flask_chatstream import ChatStreamError, RequestError, ResumeUnavailable, UpstreamError


def test_exported_names() -> None:
    assert sorted(flask_chatstream.__all__) == [
        "ChatBlueprint", "ChatRequest", "ChatResult", "ChatStreamError", "ConfigError", "MethodNotAllowed", "NotAcceptable", "Options", "RequestError",
        "RequestTimeout", "RequestTooLarge", "ResumeUnavailable", "Settings", "StreamNotFound", "StreamTruncated", "TooManyReaders", "TooManyStreams", "ToolCall", "ToolError", "UnsupportedMediaType", "UpstreamAuthError", "UpstreamError",
        "UpstreamInterrupted", "UpstreamMalformed", "UpstreamRateLimited", "UpstreamRejected", "UpstreamTimeout",
        "UpstreamUnavailable", "create_blueprint", "emit", "parsed_arguments", "warm_up",
    ]
    for name in flask_chatstream.__all__:
        assert hasattr(flask_chatstream, name)


def test_every_error_has_a_status_a_code_and_a_message() -> None:
    errors = [getattr(flask_chatstream, n) for n in flask_chatstream.__all__]
    errors = [e for e in errors if isinstance(e, type) and issubclass(e, ChatStreamError)]
    codes = set()
    for error in errors:
        instance = error()
        assert 400 <= instance.status < 600 and instance.message and instance.code
        # the client's fault, the model's, or (resume only) the server's own store
        assert issubclass(error, (RequestError, UpstreamError)) or error in (ChatStreamError, ResumeUnavailable)
        codes.add(instance.code)
    assert len(codes) == len(errors)  # codes are distinct and stable


def test_the_package_reports_its_version_as_the_changelog_has_it() -> None:
    import re
    from importlib.metadata import version

    from .servers import ROOT

    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## (\d+\.\d+\.\d+) - \d{4}-\d\d-\d\d$", changelog, re.M)
    assert released and flask_chatstream.__version__ == released[0] == version("flask-chatstream")
