"""Redis, for what the workers and instances of a fleet share: resumable streams, stops, and
``max_streams_per_client`` counted across all of them. The only module that imports redis.

Keys, all under ``chatstream:`` (the stream id in braces, so a stream's keys share a Redis Cluster
slot)::

    chatstream:{<id>}:events   a Redis Stream of the stream's events, entry id 0-<seq>, capped at
                               resume_max_events; expires resume_ttl after its last write
    chatstream:{<id>}:meta     owner, AI SDK chat id, state (live, ended, broken), heartbeat
    chatstream:{<id>}:readers  set for a few seconds by every resume read: someone is reading
    chatstream:chat:<chat id>  the chat's live stream, for the AI SDK's resume
    chatstream:slots:<client>  a sorted set of the client's open streams, scored by expiry
    chatstream:stop            the channel on which a stop reaches the stream's process

The live stream never waits on Redis: a ``Recording`` only queues, and one writer per process sends
what is queued in pipelines, with heartbeats for the live streams (a reader can tell a producer
that died) and the expiries of the slots they hold (a worker killed mid-stream leaks its slots for
``slot_ttl`` at most). Commands have short timeouts; after a failure Redis is left alone for a
second, streams go on without resume, one warning is logged, and resume answers 503 until it is
back. A stream whose events could not all be written is marked broken, never served with a gap.

One job, and over 400 lines because Redis's commands and every way they fail are spelled out here: the fleet's shared state (its store, journal, cap and ``FleetState``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._budget import Budget
from .._errors import TooManyStreams
from .._stream.limits import StreamLimit, nothing, once
from .._stream.registry import STREAMS
from .journal import Batch, Found, Journal, Recording, Unavailable
from .ledger import IN, Ledger, Taken

if TYPE_CHECKING:
    from .._config import Settings

log = logging.getLogger("flask_chatstream")

READ_WAIT = 1.0
"""Longest one resume read blocks in Redis."""
BEAT = 2.0
"""How often the writer refreshes live streams' heartbeats and held slots."""
LOST_AFTER = 10.0
"""A live stream whose producer has not beaten for this long is lost (its worker died)."""
ATTACH_MS = 5000
"""How long one resume read counts as someone reading."""
WATCH = 0.25
"""How often the writer wakes without work: to ask whether anyone reads the streams whose clients left."""
RETRY = 1.0
"""After a failure, how long Redis is left alone."""
STOP_CHANNEL = "chatstream:stop"

# Slots: a sorted set per client, members scored by expiry in the Redis server's own clock.
_ACQUIRE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_REFRESH = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', ms + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
_TAKE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms)
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local held = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    held = held + tonumber(string.match(member, ':(.*)$'))
end
local budget = tonumber(ARGV[1])
if spent >= budget then return {'out', tostring(spent)} end
if spent + held >= budget then return {'busy', tostring(spent)} end
redis.call('ZADD', KEYS[2], ms + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {'in', tostring(spent)}
"""
_SETTLE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('INCRBYFLOAT', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
_FORGET_CHAT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

T = TypeVar("T")


def _key(stream_id: str, part: str) -> str:
    return f"chatstream:{{{stream_id}}}:{part}"


class RedisStore:
    """One Redis for a blueprint: its clients, whether it is up, and the writer of this process."""

    def __init__(self, url: str, timeout: float, slot_ttl: float) -> None:
        import redis

        self.fast = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        """For short commands."""
        self.slow = redis.Redis.from_url(url, socket_timeout=READ_WAIT + timeout, socket_connect_timeout=timeout)
        """For reads that block: resume reads, the stop channel."""
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.slot_ms = int(slot_ttl * 1000)
        self.beat = min(BEAT, slot_ttl / 3)
        self.acquire_slot = self.fast.register_script(_ACQUIRE)
        self.refresh_slot = self.fast.register_script(_REFRESH)
        self.forget_chat = self.fast.register_script(_FORGET_CHAT)
        self.take_budget = self.fast.register_script(_TAKE)
        self.settle_budget = self.fast.register_script(_SETTLE)
        self._down_until = 0.0
        self._down = False
        self._pid = -1
        self._lock = threading.Lock()
        self._dirty: set[_RedisRecording] = set()
        self._live: set[_RedisRecording] = set()
        self._slots: dict[tuple[str, str], None] = {}
        self._wake = threading.Event()

    # -- health ----------------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return time.monotonic() >= self._down_until

    def ping(self) -> bool:
        """Does Redis answer (for ``readyz``)?"""
        try:
            self.call(self.fast.ping)
        except Unavailable:
            return False
        return True

    def call(self, command: Callable[[], T]) -> T:
        """Run a command, or raise ``Unavailable`` (at once while Redis is known to be down)."""
        if not self.up:
            raise Unavailable()
        try:
            result = command()
        except self.errors as exc:
            self.failed(exc)
            raise Unavailable() from None
        self.ok()
        return result

    def failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY
        if not self._down:
            self._down = True
            # The exception's type only: its text can carry the URL, password and all.
            log.warning("Redis is unavailable (%s): streams go on without resume, resume and stop on other "
                        "instances answer 503, and max_streams_per_client counts per worker until it is back",
                        type(exc).__name__)

    def ok(self) -> None:
        if self._down:
            self._down = False
            log.warning("Redis is back")

    # -- this process's writer and listener ------------------------------------------------------

    def start(self) -> None:
        """Start the writer and the stop listener, once per process (safe with forking servers)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._dirty, self._live, self._slots = set(), set(), {}
            threading.Thread(target=self._write_loop, name="chatstream-redis-writer", daemon=True).start()
            threading.Thread(target=self._listen, name="chatstream-redis-stops", daemon=True).start()

    def track(self, recording: _RedisRecording) -> None:
        """A live stream: its heartbeat goes out with every beat until it ends."""
        with self._lock:
            self._live.add(recording)

    def untrack(self, recording: _RedisRecording) -> None:
        with self._lock:
            self._live.discard(recording)

    def queue(self, recording: _RedisRecording) -> None:
        with self._lock:
            self._dirty.add(recording)
        self._wake.set()

    def hold(self, key: str, member: str) -> None:
        self._slots[(key, member)] = None

    def drop(self, key: str, member: str) -> None:
        self._slots.pop((key, member), None)

    def _write_loop(self) -> None:
        next_beat = 0.0
        while True:
            self._wake.wait(WATCH)
            self._wake.clear()
            try:
                next_beat = self._write(next_beat)
            except Exception:  # pragma: no cover - the loop must outlive a bug
                log.exception("the Redis writer failed; it goes on")

    def _write(self, next_beat: float) -> float:
        """One round: what is queued, the heartbeats and slots when due, and whether anyone reads
        the streams whose clients left."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            live = list(self._live)
        now = time.monotonic()
        beat = now >= next_beat
        if beat:
            next_beat = now + self.beat
        if not self.up:
            for recording in dirty:
                recording.broke()
            return next_beat
        pipe = self.fast.pipeline(transaction=False)
        for recording in dirty:
            recording.write(pipe)
        watching: list[tuple[_RedisRecording, int]] = []
        stamp = time.time()
        for recording in live:
            if beat:
                recording.beat(pipe, stamp)
            if recording.watching:
                watching.append((recording, len(pipe)))
                pipe.exists(recording.readers)
        if beat:
            for key, member in list(self._slots):
                self.refresh_slot(keys=[key], args=[self.slot_ms, member], client=pipe)
        if not len(pipe):
            return next_beat
        try:
            results = pipe.execute()
        except self.errors as exc:
            self.failed(exc)
            for recording in dirty:
                recording.broke()
            return next_beat
        self.ok()
        for recording, index in watching:
            recording.readers_seen = bool(results[index])
        return next_beat

    def _listen(self) -> None:
        """Stops asked for on other workers and instances, for the streams this process runs."""
        while True:
            pubsub = self.slow.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]  # typed in redis 8.2
            try:
                pubsub.subscribe(STOP_CHANNEL)
                while True:
                    message = pubsub.get_message(timeout=READ_WAIT)
                    if message is not None and message.get("type") == "message":
                        STREAMS.stop_here(message["data"].decode())
            except self.errors:
                time.sleep(RETRY)
            except Exception:  # pragma: no cover - the loop must outlive a bug
                log.exception("the Redis stop listener failed; it goes on")
                time.sleep(RETRY)
            finally:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001 - closing what already failed
                    pass


class _RedisRecording(Recording):
    def __init__(self, store: RedisStore, journal: RedisJournal, stream_id: str, chat_key: str | None) -> None:
        super().__init__()
        self._store = store
        self._journal = journal
        self._id = stream_id
        self._chat_key = chat_key
        """Where its chat's live stream is named (``_key_chat``), if it has a chat id."""
        self._events = _key(stream_id, "events")
        self._meta = _key(stream_id, "meta")
        self.readers = _key(stream_id, "readers")
        self._pending: list[bytes] = []
        self._ending = False
        self._written = 0
        self._broken = False
        self.watching = False

    def watch_readers(self) -> None:
        self.watching = True
        self._store.queue(self)  # the writer asks at once, then every WATCH seconds

    def _keep(self, data: list[bytes], ended: bool) -> None:
        if self._broken:
            return
        with self._store._lock:
            self._pending += data
            self._ending = ended
        self._store.queue(self)

    def write(self, pipe: Any) -> None:
        """Queue what is pending onto the writer's pipeline (the writer's thread)."""
        with self._store._lock:
            data, self._pending, ending = self._pending, [], self._ending
        if self._broken:
            return
        ttl = self._journal.ttl_ms
        for event in data:
            self._written += 1
            pipe.xadd(self._events, {"e": event}, id=f"0-{self._written}", maxlen=self._journal.max_events,
                      approximate=True)
        pipe.pexpire(self._events, ttl)
        pipe.pexpire(self._meta, ttl)
        if ending:
            pipe.hset(self._meta, "state", "ended")
            if self._chat_key:
                self._store.forget_chat(keys=[self._chat_key], args=[self._id], client=pipe)
            self._store.untrack(self)

    def beat(self, pipe: Any, stamp: float) -> None:
        if self._broken:
            # Redis is back after losing some of its events: readers end instead of waiting.
            pipe.hset(self._meta, "state", "broken")
            pipe.pexpire(self._meta, self._journal.ttl_ms)
            self._store.untrack(self)
            return
        pipe.hset(self._meta, "beat", stamp)
        pipe.pexpire(self._meta, self._journal.ttl_ms)
        pipe.pexpire(self._events, self._journal.ttl_ms)

    def broke(self) -> None:
        """Some events could not be written: the record cannot be replayed whole."""
        self._broken = True
        with self._store._lock:
            self._pending = []


def _key_chat(scope: str, owner: str, chat_id: str) -> str:
    """A chat's live stream, per blueprint and client: chat ids are the client's to pick."""
    digest = hashlib.blake2b("\0".join((scope, owner, chat_id)).encode(), digest_size=16).hexdigest()
    return f"chatstream:chat:{digest}"


class RedisJournal(Journal):
    """Resumable streams in Redis: any worker of any instance sharing it serves a resume."""

    def __init__(self, store: RedisStore, ttl: float, max_events: int, scope: str) -> None:
        self.store = store
        self.ttl_ms = int(ttl * 1000)
        self.max_events = max_events
        self.scope = scope

    def begin(self, stream_id: str, owner: str, chat_id: str | None) -> Recording | None:
        """Written at once (one round trip, before the first byte): the stream id the client gets
        can be resumed from the moment it has it, on any instance."""
        store = self.store
        store.start()
        meta = _key(stream_id, "meta")

        def create() -> None:
            pipe = store.fast.pipeline(transaction=False)
            pipe.hset(meta, mapping={"owner": owner, "chat": chat_id or "", "state": "live", "beat": time.time()})
            pipe.pexpire(meta, self.ttl_ms)
            if chat_id:
                pipe.set(_key_chat(self.scope, owner, chat_id), stream_id, px=self.ttl_ms)
            pipe.execute()

        try:
            store.call(create)
        except Unavailable:
            return None  # the stream goes on without resume
        recording = _RedisRecording(store, self, stream_id, _key_chat(self.scope, owner, chat_id) if chat_id else None)
        store.track(recording)
        return recording

    def find(self, stream_id: str) -> Found | None:
        def query() -> list[Any]:
            pipe = self.store.fast.pipeline(transaction=False)
            pipe.hmget(_key(stream_id, "meta"), "owner", "state")
            pipe.xrange(_key(stream_id, "events"), "-", "+", count=1)
            return pipe.execute()

        (owner, state), first = self.store.call(query)
        if owner is None:
            return None
        first_seq = int(first[0][0].split(b"-")[1]) if first else 1
        return Found(owner.decode(), first_seq, state == b"live")

    def read(self, stream_id: str, after: int, wait: float) -> Batch:
        events, readers = _key(stream_id, "events"), _key(stream_id, "readers")
        block = max(1, int(min(wait, READ_WAIT) * 1000))

        def query() -> Any:
            pipe = self.store.slow.pipeline(transaction=False)
            pipe.set(readers, 1, px=ATTACH_MS)
            pipe.xread({events: f"0-{after}"}, count=1000, block=block)
            return pipe.execute()[1]

        entries = self.store.call(query)
        if entries:
            return Batch([fields[b"e"] for _, fields in entries[0][1]])
        state, beat = self.store.call(lambda: self.store.fast.hmget(_key(stream_id, "meta"), "state", "beat"))
        lost = state != b"live" or beat is None or time.time() - float(beat) > LOST_AFTER
        return Batch([], lost=lost)

    def active(self, chat_id: str, owner: str) -> str | None:
        value = self.store.call(lambda: self.store.fast.get(_key_chat(self.scope, owner, chat_id)))
        return value.decode() if isinstance(value, bytes) else None

    def stop(self, stream_id: str) -> None:
        STREAMS.stop_here(stream_id)
        self.store.call(lambda: self.store.fast.publish(STOP_CHANNEL, stream_id))


class FleetLimit(StreamLimit):
    """``max_streams_per_client`` across every worker and instance sharing the Redis.

    Each open stream holds a member of its client's sorted set, scored by an expiry the writer keeps
    pushing back: a worker killed mid-stream leaks its slots for ``slot_ttl`` at most. While Redis
    is down, the count falls back to this worker's own.
    """

    def __init__(self, store: RedisStore, limit: int) -> None:
        super().__init__(limit)
        self.store = store

    def sibling(self, limit: int) -> StreamLimit:
        return FleetLimit(self.store, limit)

    def acquire(self, key: str, error: type[TooManyStreams] = TooManyStreams) -> Callable[[], None]:
        if not self.limit:
            return nothing
        store = self.store
        store.start()
        slots, member = f"chatstream:slots:{key}", uuid.uuid4().hex
        try:
            taken = store.call(lambda: store.acquire_slot(keys=[slots], args=[self.limit, store.slot_ms, member]))
        except Unavailable:
            return super().acquire(key, error)
        if not taken:
            raise error()
        store.hold(slots, member)

        def release() -> None:
            store.drop(slots, member)
            try:
                store.call(lambda: store.fast.zrem(slots, member))
            except Unavailable:
                pass  # it expires

        return once(release)


class FleetLedger:
    """Budgets across every worker and instance sharing the Redis: a counter per client and window, and
    a sorted set of the holds of its answers in progress (each member carries its amount), scored by an
    expiry the writer keeps pushing back as for stream slots: a worker killed mid-answer leaks its hold
    for ``slot_ttl`` at most. One script decides."""

    def __init__(self, store: RedisStore, scope: str) -> None:
        self.store = store
        self.scope = scope

    def _keys(self, key: str, since: float) -> list[str]:
        tag = f"chatstream:budget:{{{self.scope}:{key}:{int(since)}}}"
        return [f"{tag}:spent", f"{tag}:holds"]

    def take(self, key: str, budget: Budget, hold: float, now: float) -> Taken:
        store = self.store
        store.start()
        since, until = budget.bounds(now)
        keys, member = self._keys(key, since), f"{uuid.uuid4().hex}:{hold!r}"
        found, spent = store.call(lambda: store.take_budget(keys=keys, args=[budget.amount, member, store.slot_ms]))
        verdict = found.decode() if isinstance(found, bytes) else str(found)
        if verdict == IN:
            store.hold(keys[1], member)
        return Taken(verdict, float(spent), since, member if verdict == IN else "")

    def settle(self, key: str, budget: Budget, taken: Taken, spent: float) -> None:
        store, keys = self.store, self._keys(key, taken.window)
        store.drop(keys[1], taken.member)
        ttl = max(1, int(taken.window + budget.window - time.time()) + 60)
        try:
            store.call(lambda: store.settle_budget(keys=keys, args=[taken.member, repr(spent), ttl]))
        except Unavailable:
            log.debug("budget: Redis did not take what an answer cost; it is not counted")


class FleetState:
    """What every worker of every instance sharing the Redis shares: a stop reaches a resumable stream
    wherever it runs (through its journal), a resume reads it anywhere, and the cap counts them all."""

    def __init__(self, store: RedisStore, limit: StreamLimit, journal: RedisJournal | None, scope: str) -> None:
        self.limit = limit
        self.ledger: Ledger = FleetLedger(store, scope)
        self.journal: Journal | None = journal
        self.check: tuple[str, Callable[[], bool]] | None = ("redis", store.ping)

    def started(self) -> None:
        pass  # the writer starts with the first slot or recording

    def stop(self, stream_id: str, owner: str) -> bool:
        return self.journal is not None and self.journal.stop_owned(stream_id, owner)


def open_fleet(settings: Settings, scope: str) -> FleetState:
    store = RedisStore(settings.redis_url or "", settings.redis_timeout, settings.slot_ttl)
    journal = RedisJournal(store, settings.resume_ttl, settings.resume_max_events, scope) if settings.resumable else None
    return FleetState(store, FleetLimit(store, settings.max_streams_per_client), journal, scope)
