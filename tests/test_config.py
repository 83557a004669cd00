from __future__ import annotations

import openai
import pytest
from flask import Flask

from flask_chatstream import ConfigError, Settings, create_blueprint
from flask_chatstream._config import resolve
from flask_chatstream.testing import StandInServer

from .conftest import API_KEY, AppFactory


def test_config_beats_keyword_beats_environment() -> None:
    """Deployment settings win over the code's defaults (Flask's extension guide)."""
    env = {"OPENAI_API_KEY": "env-key", "OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}
    config = {"CHATSTREAM_MODEL": "from-config", "CHATSTREAM_BASE_URL": "http://127.0.0.1:2/v1"}
    settings = resolve({"model": "from-kwarg", "max_tokens": 77, "api_key": "kwarg-key"}, config, env)
    assert settings.model == "from-config"
    assert settings.base_url == "http://127.0.0.1:2/v1"
    assert settings.max_tokens == 77
    assert settings.api_key == "kwarg-key"
    assert resolve({}, {}, env).api_key == "env-key"


def test_create_blueprint_model_yields_to_chatstream_model(upstream: StandInServer) -> None:
    app = Flask(__name__)
    app.config["CHATSTREAM_MODEL"] = "deployed-model"
    app.register_blueprint(create_blueprint(model="coded-model", api_key=API_KEY, base_url=upstream.url),
                           url_prefix="/api")
    assert app.test_client().post("/api/chat", json={"content": "hi"}).status_code == 200
    assert upstream.stats.bodies[-1]["model"] == "deployed-model"


def test_defaults() -> None:
    settings = resolve({}, {}, {})
    assert settings == Settings()
    assert settings.allow_system_role is False
    assert settings.models == ("gpt-4o-mini",)


def test_strings_from_config_are_parsed() -> None:
    config = {"CHATSTREAM_MAX_TOKENS": "512", "CHATSTREAM_ALLOW_SYSTEM_ROLE": "true",
              "CHATSTREAM_ALLOWED_MODELS": "a, b", "CHATSTREAM_READ_TIMEOUT": "2.5", "CHATSTREAM_MAX_RETRIES": "0"}
    settings = resolve({}, config, {})
    assert (settings.max_tokens, settings.allow_system_role, settings.allowed_models) == (512, True, ("a", "b"))
    assert (settings.read_timeout, settings.max_retries) == (2.5, 0)


@pytest.mark.parametrize(
    ("options", "config", "named"),
    [
        ({"max_tokens": 0}, {}, "create_blueprint(max_tokens=...)"),
        ({}, {"CHATSTREAM_MAX_TOKENS": "lots"}, "app.config['CHATSTREAM_MAX_TOKENS']"),
        ({}, {"CHATSTREAM_READ_TIMEOUT": -1}, "app.config['CHATSTREAM_READ_TIMEOUT']"),
        ({"allow_system_role": "maybe"}, {}, "create_blueprint(allow_system_role=...)"),
        ({"allowed_models": [1, 2]}, {}, "create_blueprint(allowed_models=...)"),
        ({"max_tokens_param": "tokens"}, {}, "create_blueprint(max_tokens_param=...)"),
        ({"model": ""}, {}, "create_blueprint(model=...)"),
    ],
)
def test_bad_value_fails_at_registration_naming_the_key(options: dict, config: dict, named: str) -> None:
    app = Flask(__name__)
    app.config.update(config)
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        app.register_blueprint(create_blueprint(api_key="k", **options))


def test_a_bad_api_key_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        resolve({}, {"CHATSTREAM_API_KEY": ["sk-secret-in-a-list"]}, {})
    assert "sk-secret" not in str(info.value) and "CHATSTREAM_API_KEY" in str(info.value)


def test_missing_api_key_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        Flask(__name__).register_blueprint(create_blueprint())


def test_unknown_option_and_conflicting_client() -> None:
    with pytest.raises(TypeError, match="modle"):
        Flask(__name__).register_blueprint(create_blueprint(modle="x"))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="client="):
        create_blueprint(client=openai.OpenAI(api_key="k"), api_key="k")


def test_several_blueprints_with_their_own_settings(upstream: StandInServer) -> None:
    app = Flask(__name__)
    common = {"api_key": API_KEY, "base_url": upstream.url, "max_retries": 0}
    app.register_blueprint(create_blueprint("small", model="small-model", max_tokens=10, **common), url_prefix="/a")
    app.register_blueprint(create_blueprint("big", model="big-model", system_prompt="Be brief.", **common),
                           url_prefix="/b")
    client = app.test_client()
    assert client.post("/a/chat", json={"content": "hi"}).status_code == 200
    assert client.post("/b/chat", json={"content": "hi"}).status_code == 200
    first, second = upstream.stats.bodies
    assert (first["model"], first["max_completion_tokens"], first["messages"][0]["role"]) == ("small-model", 10, "user")
    assert (second["model"], second["messages"][0]) == ("big-model", {"role": "system", "content": "Be brief."})


def test_one_blueprint_in_several_apps(upstream: StandInServer) -> None:
    blueprint = create_blueprint(api_key=API_KEY, base_url=upstream.url)
    apps = [Flask(f"app{i}") for i in range(2)]
    apps[1].config["CHATSTREAM_MODEL"] = "second-app-model"
    for app in apps:
        app.register_blueprint(blueprint, url_prefix="/api")
    for app in apps:
        assert app.test_client().post("/api/chat", json={"content": "hi"}).status_code == 200
    assert [b["model"] for b in upstream.stats.bodies] == ["gpt-4o-mini", "second-app-model"]


def test_injected_client_is_used(make_app: AppFactory, upstream: StandInServer) -> None:
    client = openai.OpenAI(api_key="injected-key", base_url=upstream.url, max_retries=0)
    app = make_app(client=client)
    assert app.extensions["chatstream"]["chatstream"].upstream.client is client
    response = app.test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 200 and upstream.stats.requests == 1


def test_a_blueprints_own_keys_win_over_the_shared_ones(upstream: StandInServer) -> None:
    app = Flask(__name__)
    app.config.update({"CHATSTREAM_MODEL": "shared", "CHATSTREAM_MINI_MODEL": "mini-only",
                       "CHATSTREAM_MINI_MAX_TOKENS": "32", "CHATSTREAM_API_KEY": API_KEY,
                       "CHATSTREAM_BASE_URL": upstream.url})
    app.register_blueprint(create_blueprint("mini", model="coded"), url_prefix="/mini")
    app.register_blueprint(create_blueprint("full", model="coded"), url_prefix="/full")
    client = app.test_client()
    for prefix in ("/mini", "/full"):
        assert client.post(f"{prefix}/chat", json={"content": "hi"}).status_code == 200
    mini, full = list(upstream.stats.bodies)[-2:]
    assert (mini["model"], mini["max_completion_tokens"]) == ("mini-only", 32)
    assert (full["model"], full["max_completion_tokens"]) == ("shared", 4096)


def test_a_bad_per_blueprint_value_names_its_key() -> None:
    app = Flask(__name__)
    app.config.update({"CHATSTREAM_API_KEY": API_KEY, "CHATSTREAM_SUPPORT_DESK_MAX_TOKENS": "lots"})
    with pytest.raises(ConfigError, match=r"app.config\['CHATSTREAM_SUPPORT_DESK_MAX_TOKENS'\] must be a positive"):
        app.register_blueprint(create_blueprint("support-desk"), url_prefix="/support")


def test_secrets_never_show_in_the_settings_repr() -> None:
    settings = resolve({"api_key": "sk-very-secret", "redis_url": "redis://:hunter2@cache:6379/0",
                        "base_url": "https://relay:gw-pass-77@gateway.internal/v1"}, {}, {})
    shown = repr(settings)
    assert "sk-very-secret" not in shown and "hunter2" not in shown and "gw-pass-77" not in shown
    assert "api_key='(set)'" in shown and "redis_url='redis://***@cache:6379/0'" in shown
    assert "base_url='https://***@gateway.internal/v1'" in shown
    assert settings.api_key == "sk-very-secret"  # masked in what is shown only
