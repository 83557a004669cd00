"""The example app: flask_chatstream at /api, saved conversations, and a page at / that streams answers.

    gunicorn -c python:flask_chatstream.gunicorn example_app:app     # production-style, gevent workers
    python example_app.py                            # Flask's dev server

With OPENAI_API_KEY set it talks to OpenAI (or to OPENAI_BASE_URL). Without
one it runs the offline demo: the stand-in model from flask_chatstream.testing,
on 127.0.0.1 inside this process, reached through the same openai client and
relay as the real thing.

Conversations live in a database through SQLAlchemy: a SQLite file under
``instance/`` by default, any SQLAlchemy URL with CHAT_DATABASE_URL. The
browser sends only its new message and a conversation id; ``before_upstream``
puts the saved history in front of it and saves the question with a placeholder
for its answer, and ``after_stream`` saves the answer, even one whose reader
left (``on_client_leave="finish"``: a closed tab still gets its answer saved,
while Stop, which tells the server, stops it).

Two tools show the loop: ``current_time`` runs when the model calls it (and reports
what it is doing with ``emit``); ``rename_chat`` needs the user's approval first
(the useChat example shows Approve and Deny). Approvals are signed with the app's
SECRET_KEY: from the environment, or one made once and kept in ``instance/``.

    GET    /api/conversations          newest first: id, title, updated_at
    GET    /api/conversations/<id>     its messages
    PATCH  /api/conversations/<id>     {"title": "..."}: rename it
    DELETE /api/conversations/<id>
    POST   /api/chat                   {"conversation_id": "...", "content": "..."}; with "regenerate": true
                                       the last question and its answer are replaced by this one's

One job, in one file on purpose so that it reads whole: a user's app (its store, its offline demo
model, its pages), which is why it runs past 400 lines.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from flask import Flask, Response, abort, jsonify, request, send_from_directory
from sqlalchemy import ForeignKey, String, Text, create_engine, delete, func, inspect, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from flask_chatstream import ChatBlueprint, ChatRequest, ChatResult, ToolError, create_blueprint, emit, parsed_arguments

EXAMPLES = Path(__file__).with_name("examples")
PAGE = EXAMPLES / "demo_page.html"
REACT_BUILD = EXAMPLES / "react-rtk-query" / "dist"
AI_SDK_BUILD = EXAMPLES / "react-ai-sdk" / "dist"
AG_UI_BUILD = EXAMPLES / "ag-ui" / "dist"
DEMO_MODEL = "offline-demo"
CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
log = logging.getLogger("example_app")


# ---- the database ------------------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, index=True)
    messages: Mapped[list[Message]] = relationship(order_by="Message.id", cascade="all, delete-orphan")


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="complete")
    """complete; streaming (its answer is on its way); stopped (its reader stopped it); or error"""
    tools: Mapped[str | None] = mapped_column(Text, default=None)
    """The tools the server ran for this answer, as JSON: [{id, name, arguments, output | error}]."""
    reasoning: Mapped[str | None] = mapped_column(Text, default=None)
    """A reasoning model's thinking before this answer, where the upstream streams it."""


def _message(m: Message) -> dict[str, Any]:
    message: dict[str, Any] = {"id": m.id, "role": m.role, "content": m.content, "status": m.status}
    if m.tools:
        message["tools"] = json.loads(m.tools)
    if m.reasoning:
        message["reasoning"] = m.reasoning
    return message


class Store:
    """Conversations and their messages, in one SQLAlchemy database."""

    def __init__(self, url: str) -> None:
        options: dict[str, Any] = {}
        if url.startswith("sqlite"):
            options["connect_args"] = {"check_same_thread": False}
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, **options)
        for attempt in range(5):
            try:
                Base.metadata.create_all(self.engine)
                break
            except OperationalError:  # another worker, booting beside this one, created a table first
                if attempt == 4:
                    raise
                time.sleep(0.05)
        if "reasoning" not in {c["name"] for c in inspect(self.engine).get_columns("messages")}:
            # a database from before answers kept their reasoning (a real app would use Alembic)
            with self.engine.begin() as connection:
                connection.execute(text("ALTER TABLE messages ADD COLUMN reasoning TEXT"))
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def last_answer(self, conversation_id: str) -> Message | None:
        with self.session() as session:
            return session.scalar(select(Message).where(Message.conversation_id == conversation_id,
                                                        Message.role == "assistant").order_by(Message.id.desc()))

    def history(self, conversation_id: str, before: int | None = None) -> list[dict[str, str]]:
        """The conversation as the model should see it: what was asked, and what was answered (a
        stopped answer as far as it got; failed and unfinished ones not at all); only the messages
        before ``before``, if given."""
        with self.session() as session:
            rows = session.scalars(select(Message).where(Message.conversation_id == conversation_id,
                                                         Message.id < (before or 2**62)).order_by(Message.id)).all()
        return [{"role": m.role, "content": m.content} for m in rows
                if m.content and (m.role == "user" or m.status in ("complete", "stopped"))]

    def start(self, conversation_id: str, question: str) -> int:
        """Save the question and a placeholder for its answer (status "streaming"); return the
        placeholder's id. A reader who reloads meanwhile sees the answer is on its way."""
        with self.session.begin() as session:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None:
                conversation = Conversation(id=conversation_id, title=" ".join(question.split())[:80])
                session.add(conversation)
            conversation.updated_at = _now()
            answer = Message(role="assistant", content="", status="streaming")
            conversation.messages += [Message(role="user", content=question), answer]
        return answer.id

    def drop_last_exchange(self, conversation_id: str) -> None:
        """Forget the last question and everything after it (its answer, its tools): to regenerate it."""
        with self.session.begin() as session:
            last = session.scalar(select(func.max(Message.id)).where(
                Message.conversation_id == conversation_id, Message.role == "user"))
            if last is not None:
                session.execute(delete(Message).where(Message.conversation_id == conversation_id,
                                                      Message.id >= last))

    def reopen(self, message_id: int) -> None:
        """An answer goes on (after a tool approval): it is "streaming" again until it is saved."""
        with self.session.begin() as session:
            answer = session.get(Message, message_id)
            if answer is not None:
                answer.status = "streaming"

    def rename(self, conversation_id: str, title: str) -> bool:
        with self.session.begin() as session:
            conversation = session.get(Conversation, conversation_id)
            if conversation is not None:
                conversation.title = title
            return conversation is not None

    def finish(self, message_id: int, answer_text: str, status: str, tools: list[dict[str, Any]],
               reasoning: str | None, continues: bool = False) -> None:
        """Save an answer; one that ``continues`` (after a tool approval) adds to what is saved."""
        with self.session.begin() as session:
            answer = session.get(Message, message_id)
            if answer is None:
                return
            if continues:
                earlier = {t["id"]: t for t in json.loads(answer.tools or "[]")}
                tools = list({**earlier, **{t["id"]: t for t in tools}}.values())
                answer_text = answer.content + answer_text
                reasoning = "".join(filter(None, [answer.reasoning, reasoning]))
            answer.content, answer.status, answer.reasoning = answer_text, status, reasoning or None
            answer.tools = json.dumps(tools) if tools else None

    def list(self) -> list[dict[str, Any]]:
        with self.session() as session:
            rows = session.execute(
                select(Conversation, func.count(Message.id)).outerjoin(Message)
                .group_by(Conversation.id).order_by(Conversation.updated_at.desc())).all()
        return [{"id": c.id, "title": c.title, "updated_at": c.updated_at.isoformat(), "messages": n}
                for c, n in rows]

    def get(self, conversation_id: str) -> dict[str, Any] | None:
        with self.session() as session:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None:
                return None
            return {"id": conversation.id, "title": conversation.title,
                    "messages": [_message(m) for m in conversation.messages]}

    def delete(self, conversation_id: str) -> bool:
        with self.session.begin() as session:
            session.execute(delete(Message).where(Message.conversation_id == conversation_id))
            return bool(session.execute(delete(Conversation).where(Conversation.id == conversation_id)).rowcount)


# ---- the app -------------------------------------------------------------------------------------


def demo_tool_calls(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The offline demo model calls the example's tools: ``rename_chat`` when asked to rename the chat
    ("rename this chat to Trip plans"), ``current_time`` when asked for the time (once no result is in yet)."""
    last = messages[-1] if messages else {}
    asked = str(last.get("content", "")) if last.get("role") == "user" else ""
    renamed = re.search(r"\brename\b.*?\bto\s+(.+)", asked, re.IGNORECASE)
    if renamed:
        return [{"name": "rename_chat", "arguments": {"title": renamed.group(1).strip(" .\"'")[:80]}}]
    if "time" in asked.lower():
        return [{"name": "current_time", "arguments": {"zone": "UTC"}}]
    return None


DEMO_ANSWER = """This is the offline demo model, so the answer is canned, but the path is real:

1. the **openai** client posted your prompt to a local OpenAI-compatible server;
2. `flask_chatstream` relayed each chunk as it arrived;
3. your browser is reading the response body with `fetch` and a stream reader.

| Format | Content-Type | Good for |
|---|---|---|
| text | `text/plain` | the simplest reader |
| NDJSON | `application/x-ndjson` | typed events, one JSON object per line |
| SSE | `text/event-stream` | `EventSource`, and proxies that know it |

Reading it in the browser takes a few lines:

```js
const reader = response.body.getReader();
const decoder = new TextDecoder();
for (;;) {
  const { value, done } = await reader.read();
  if (done) break;
  output.textContent += decoder.decode(value, { stream: true });
}
```

Set `OPENAI_API_KEY` and restart to get answers from a real model through exactly the same code."""


def demo_reply(messages: Sequence[dict[str, Any]]) -> str:
    """A deterministic answer in markdown (a list, a table, code), to show the stream and its rendering."""
    if messages and messages[-1].get("role") == "tool":
        result = str(messages[-1].get("content"))
        if "denied" in result:
            return "All right, I left the chat's name as it was."
        if result.startswith("Renamed"):
            return f"{result}. (You approved that tool call; the server ran it then.)"
        if result.startswith('{"error"'):
            return f"The tool could not do it: {json.loads(result)['error']}"
        return f"The server's clock says {result}. (That came from a tool the model called.)"
    asked = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    asked = " ".join(asked.split())[:200]
    earlier = sum(1 for m in messages if m.get("role") == "user") - 1
    memory = f" (I can see {earlier} earlier question{'s' if earlier != 1 else ''} in this conversation.)" \
        if earlier > 0 else ""
    return f"You asked: \u201c{asked}\u201d.{memory} {DEMO_ANSWER}"


def secret_key(instance: Path) -> str:
    """SECRET_KEY from the environment, or one made once and kept in the instance folder (so every
    worker, and the next start, signs with the same key)."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = instance / "secret_key"
    instance.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="ascii") as made:  # the first worker to get here makes it
            made.write(os.urandom(32).hex())
    except FileExistsError:
        pass
    for _ in range(50):
        key = path.read_text(encoding="ascii").strip()
        if key:
            return key
        time.sleep(0.02)  # another worker is writing it
    raise RuntimeError(f"{path} is empty: delete it and start again.")


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = secret_key(Path(app.instance_path))
    # CHATSTREAM_* settings may come from the environment, e.g. CHATSTREAM_MODEL=gpt-4.1-mini.
    app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    demo = not os.environ.get("OPENAI_API_KEY")
    options: dict[str, Any] = {}
    if demo:
        from flask_chatstream.testing import Script, StandInServer

        # DEMO_DELAY: seconds between the demo model's words (a person's reading pace by default).
        delay = float(os.environ.get("DEMO_DELAY", "0.04"))
        upstream = StandInServer(Script(reply=demo_reply, tool_calls=demo_tool_calls, first_delay=min(0.3, delay * 8),
                                        delay=delay)).start()
        options = {"api_key": "offline-demo", "base_url": upstream.url, "model": DEMO_MODEL}
        log.info("Demo mode: no OPENAI_API_KEY, so answers come from the offline demo model at %s", upstream.url)

    store = Store(os.environ.get("CHAT_DATABASE_URL") or f"sqlite:///{Path(app.instance_path) / 'chat.db'}")
    app.extensions["example_store"] = store
    chat = create_blueprint(on_client_leave="finish", **options)
    add_hooks(chat, store)
    add_tools(chat, store)
    app.register_blueprint(chat, url_prefix="/api")
    add_conversations(app, store)
    add_pages(app, demo)
    return app


def add_hooks(chat: ChatBlueprint, store: Store) -> None:
    """The conversation's history from the database before the model is asked, the answer into it after."""

    @chat.before_upstream
    def load_history(chat_request: ChatRequest) -> ChatRequest | None:
        """The browser sends only its new message; the conversation's history comes from the database."""
        conversation_id = chat_request.body.get("conversation_id")
        if conversation_id is None:
            return None  # a one-off question: nothing to load, nothing to save
        if not isinstance(conversation_id, str) or not CONVERSATION_ID.fullmatch(conversation_id):
            abort(400, "conversation_id must be 1 to 64 letters, digits, '-' or '_'.")
        *before, question = chat_request.messages
        system = [m for m in before if m["role"] == "system"]
        if question["role"] in ("assistant", "tool"):
            # useChat goes on with the last answer, sent back with its tool calls approved or denied
            # (their results come next): the history before it, then it. It is saved into that answer.
            answer = store.last_answer(conversation_id)
            if answer is None:
                abort(404, "There is no such conversation.")
            chat_request.context.update(answer_id=answer.id, continues=True)
            store.reopen(answer.id)  # on its way again: a reload says so, until after_stream saves it
            sent = [m for m in chat_request.messages if m["role"] != "system"]
            return dataclasses.replace(chat_request,
                                       messages=[*system, *store.history(conversation_id, before=answer.id), *sent])
        if question["role"] != "user" or not isinstance(question["content"], str):
            abort(400, "With a conversation_id, send one new user message as text.")
        if chat_request.body.get("regenerate") is True:
            store.drop_last_exchange(conversation_id)  # asked again: the old answer makes way
        history = store.history(conversation_id)
        chat_request.context["answer_id"] = store.start(conversation_id, question["content"])
        return dataclasses.replace(chat_request, messages=[*system, *history, question])

    @chat.after_stream
    def save_answer(result: ChatResult) -> None:
        answer_id = result.request.context.get("answer_id")
        if answer_id is not None:
            status = {"done": "complete", "error": "error"}.get(result.outcome, "stopped")
            tools = [{"id": c.id, "name": c.name, "arguments": parsed_arguments(c.arguments),
                      **({"denied": True} if c.denied else {}),
                      **({"error": c.error} if c.error is not None else {"output": c.output})}
                     for c in result.tool_calls]
            store.finish(answer_id, result.text, status, tools, result.reasoning,
                         continues=bool(result.request.context.get("continues")))

    @chat.message_metadata
    def answer_metadata(known: ChatRequest | ChatResult) -> dict[str, Any] | None:
        """Beside the answer, for the page: the model as it starts, how long it took when it is done
        (useChat's message.metadata; the start and done events' metadata in NDJSON and SSE)."""
        if isinstance(known, ChatRequest):
            return {"model": known.model}
        return {"seconds": round(known.duration, 2)}



def add_tools(chat: ChatBlueprint, store: Store) -> None:
    """Two server-side tools: a harmless one, and one that waits for the user's approval."""

    @chat.tool
    def current_time(zone: Literal["UTC", "local"] = "UTC") -> str:
        """The server's current date and time, in ISO 8601. A harmless tool, to show the loop.

        Args:
            zone: UTC, or the server's local time.
        """
        emit("status", f"Reading the server's {zone} clock", transient=True)
        now = datetime.now(timezone.utc)
        return (now if zone == "UTC" else now.astimezone()).isoformat(timespec="seconds")

    @chat.tool(needs_approval=True)
    def rename_chat(title: str, chat_request: ChatRequest) -> str:
        """Rename this chat. It runs only once the user approves.

        Args:
            title: The new title, a few words.
        """
        conversation_id = chat_request.body.get("conversation_id")
        title = " ".join(title.split())[:200]
        if not isinstance(conversation_id, str) or not title or not store.rename(conversation_id, title):
            raise ToolError("This chat is not saved, so it has no title to change.")
        return f"Renamed the chat to \u201c{title}\u201d"


def add_conversations(app: Flask, store: Store) -> None:
    """The saved conversations, for the pages' sidebars."""

    @app.get("/api/conversations")
    def list_conversations() -> Response:
        return jsonify(store.list())

    @app.get("/api/conversations/<conversation_id>")
    def get_conversation(conversation_id: str) -> Response | tuple[Response, int]:
        conversation = store.get(conversation_id)
        if conversation is None:
            return _not_found()
        return jsonify(conversation)

    @app.patch("/api/conversations/<conversation_id>")
    def rename_conversation(conversation_id: str) -> Response | tuple[Response, int]:
        body = request.get_json(silent=True)
        title = body.get("title") if isinstance(body, dict) else None
        if not isinstance(title, str) or not title.strip() or len(title) > 200:
            return jsonify(error={"code": "invalid_title", "message": "A title is 1 to 200 characters."}), 400
        if not store.rename(conversation_id, " ".join(title.split())):
            return _not_found()
        return Response(status=204)

    @app.delete("/api/conversations/<conversation_id>")
    def delete_conversation(conversation_id: str) -> Response | tuple[Response, int]:
        if not store.delete(conversation_id):
            return _not_found()
        return Response(status=204)



def add_pages(app: Flask, demo: bool) -> None:
    """The demo page and the three React examples."""

    page = PAGE.read_text(encoding="utf-8").replace(
        "<!--BANNER-->",
        '<p class="demo" id="demo-banner">Offline demo: answers come from a canned demo model. '
        "Set OPENAI_API_KEY to use a real one.</p>"
        if demo
        else "",
    )

    @app.get("/")
    def index() -> Response:
        return Response(page, content_type="text/html; charset=utf-8")

    def built(build: Path, name: str) -> Response:
        """A React example, once built (make test builds both)."""
        if not (build / "index.html").is_file():
            return Response(f"Build the example first: cd {build.parent.relative_to(EXAMPLES.parent)} && npm ci && "
                            "npm run build\n", status=404, content_type="text/plain; charset=utf-8")
        return send_from_directory(build, name)

    @app.get("/chat-ui/chat.css")
    def chat_css() -> Response:
        """The look the demo page shares with the React examples (examples/chat-ui/)."""
        return send_from_directory(EXAMPLES / "chat-ui", "chat.css", max_age=3600)

    @app.get("/vendor/<path:name>")
    def vendor(name: str) -> Response:
        """The demo page's markdown, sanitizing and highlighting code (examples/vendor/update.sh)."""
        return send_from_directory(EXAMPLES / "vendor", name, max_age=3600)

    @app.get("/react/")
    @app.get("/react/<path:name>")
    def react_example(name: str = "index.html") -> Response:
        """React + RTK Query."""
        return built(REACT_BUILD, name)

    @app.get("/ai-sdk/")
    @app.get("/ai-sdk/<path:name>")
    def ai_sdk_example(name: str = "index.html") -> Response:
        """React + the Vercel AI SDK's useChat."""
        return built(AI_SDK_BUILD, name)

    @app.get("/ag-ui/")
    @app.get("/ag-ui/<path:name>")
    def ag_ui_example(name: str = "index.html") -> Response:
        """React + AG-UI's HttpAgent (CopilotKit's protocol)."""
        return built(AG_UI_BUILD, name)


def _not_found() -> tuple[Response, int]:
    return jsonify(error={"code": "conversation_not_found", "message": "There is no such conversation."}), 404


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", 8000)), threaded=True)
