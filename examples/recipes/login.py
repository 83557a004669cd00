"""Flask-Login: only signed-in users chat, and each user is one client for caps, stops and resumes."""

from flask import Flask, request
from flask_login import LoginManager, UserMixin, current_user, login_user

from flask_chatstream import ChatRequest, ChatResult, create_blueprint

login_manager = LoginManager()
chat = create_blueprint(client_key=lambda: str(current_user.id), max_streams_per_client=2)
saved: list[tuple[str, str]] = []


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


@login_manager.user_loader
def load_user(user_id: str) -> User:
    return User(user_id)


@chat.before_request
def signed_in_only() -> None:
    if not current_user.is_authenticated:
        login_manager.unauthorized()  # a JSON 401 on the chat's routes


@chat.before_upstream
def remember_who(chat_request: ChatRequest) -> None:
    chat_request.context["user_id"] = current_user.id  # current_user is there while the request is


@chat.after_stream
def save(result: ChatResult) -> None:
    # After the response: an app context, but no request, so no current_user. Use what was kept.
    saved.append((result.request.context["user_id"], result.text))


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "change me"
    app.config.update(config or {})
    login_manager.init_app(app)

    @app.post("/login")
    def login() -> tuple[str, int]:
        login_user(User(request.form["name"]))
        return "", 204

    app.register_blueprint(chat, url_prefix="/api")
    return app
