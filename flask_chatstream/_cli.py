"""``flask chatstream check``: the settings each chat blueprint runs with, and whether its model answers."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from ._chat import ChatRequest
from ._config import Settings
from ._errors import ChatStreamError
from ._stream.relay import Relay
from ._upstream.client import Upstream
from ._wire.encoders import TEXT

NOT_LISTED = ("Chats that ask for it fail if the upstream does not serve it: check the model's name, or set "
              "CHATSTREAM_MODEL to one it lists (some servers, such as proxies and the stand-in, serve models "
              "they do not list; --send tries it).")

cli = AppGroup("chatstream", help="flask_chatstream: check the chat blueprints' settings and upstream.")


@cli.command("check")
@click.option("--send", is_flag=True, help="Also stream one tiny answer from the default model (a few tokens).")
def check(send: bool) -> None:
    """Print each chat blueprint's settings (secrets masked) and reach its upstream: list its models,
    and with --send stream one short answer. Exits 1 if any upstream fails."""
    states = current_app.extensions.get("chatstream", {})
    if not states:
        raise click.ClickException("This app has no chatstream blueprint. Did you forget "
                                   "app.register_blueprint(create_blueprint(), url_prefix=...)?")
    failed = False
    for name, state in states.items():
        settings: Settings = state.settings
        shown = settings.masked()
        click.echo(f"[{name}]")
        for key, value in shown.items():
            click.echo(f"  {key} = {value!r}")
        where = "a custom client" if state.upstream.custom_client else (shown["base_url"] or "OpenAI")
        try:
            models = state.upstream.models()
            click.echo(f"  upstream: {where} answers, {len(models)} models; {settings.model!r} is "
                       + ("listed" if settings.model in models else f"NOT listed. {NOT_LISTED}"))
            if send:
                click.echo(f"  answer: {_tiny_answer(state.upstream, settings)!r}")
        except ChatStreamError as error:
            failed = True
            click.echo(f"  upstream: {where} failed: {error.code}: {error.message}", err=True)
    if failed:
        raise SystemExit(1)


def _tiny_answer(upstream: Upstream, settings: Settings) -> str:
    chat = ChatRequest(messages=[{"role": "user", "content": "Say OK."}], model=settings.model, max_tokens=16)
    relay = Relay(upstream.open(chat), TEXT, settings)
    try:
        text = b"".join(relay).decode()
    finally:
        relay.close()
    if relay.error is not None:
        raise relay.error
    return text
