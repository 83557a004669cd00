"""Everything that depends on gevent, in one place: what is patched, and the OS's own ``select``.

Other modules ask this one; none of them reaches into gevent itself. Nothing here imports gevent
unless the process already has (gunicorn's gevent worker, or an app that patched by hand), so a
plain WSGI server pays nothing for it.
"""

from __future__ import annotations

import importlib
import logging
import select
import sys
import threading
import types
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("flask_chatstream")


def patched(module: str = "socket") -> bool:
    """Has gevent monkey-patched ``module`` in this process?"""
    if "gevent.monkey" not in sys.modules:
        return False
    import gevent.monkey

    return bool(gevent.monkey.is_module_patched(module))


def unpatched(name: str) -> Any:
    """``select.<name>`` as the OS gives it, even where gevent patched it to wait cooperatively.

    For zero-timeout checks, which never block, the patched versions only add watchers, a timer
    and a hub switch.
    """
    if patched("select"):
        import gevent.monkey

        return gevent.monkey.get_original("select", name)
    return getattr(select, name)


def poll_now(fd: int, events: int) -> int:
    """The ``events`` that are ready on ``fd`` right now, without blocking or yielding."""
    poller = unpatched("poll")()
    poller.register(fd, events)
    ready = poller.poll(0)
    return int(ready[0][1]) if ready else 0


def running_in_gevent_server(environ: dict[str, Any]) -> bool:
    """Does the WSGI server run each request in a greenlet (gunicorn's gevent worker, gevent.pywsgi)?"""
    software = str(environ.get("SERVER_SOFTWARE", ""))
    return "gevent" in software or "gevent" in sys.modules and _in_greenlet()


def _in_greenlet() -> bool:
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return False
    current = greenlet.getcurrent()
    return current.parent is not None  # the main greenlet has no parent


@contextmanager
def interruptible(cancel: Any) -> Iterator[None]:
    """Within the block, ``cancel.interrupt(exc)`` from another greenlet raises ``exc`` in this one,
    where it waits: for a wait whose socket is out of reach (an httpx client's request before its
    head). Only under gevent; elsewhere there is no way to interrupt a blocked thread, and it does
    nothing."""
    if cancel is None or not patched("socket") or not _in_greenlet():
        yield
        return
    import gevent

    waiting: Any = gevent.getcurrent()
    inside = True

    def interrupt(exc: BaseException) -> None:
        def throw() -> None:
            if inside:  # not once the block is left: the greenlet is elsewhere by then
                waiting.throw(exc)

        gevent.get_hub().loop.run_callback(throw)

    cancel.interrupt = interrupt
    try:
        yield
    finally:
        inside = False
        cancel.interrupt = None


class FairLock:
    """A lock that goes to its waiters in turn: ``release`` hands it to the first one in line.

    gevent's lock lets a greenlet that releases take it straight back while others wait (the
    waiters are only woken on the next turn of the hub). httpcore's HTTP/2 connection reads in a
    loop of release and re-acquire, so a stream waiting for its turn to read can starve behind a
    silent one whose reader blocks on the socket again at once: its frames are already in, never
    taken, until the silent stream ends. Handing the lock over closes that gap.
    """

    __slots__ = ("_guard", "_locked", "_waiters")

    def __init__(self) -> None:
        self._guard = threading.Lock()  # held only for a few statements, never across a wait
        self._locked = False
        self._waiters: deque[Any] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self._guard:
            if not self._locked:
                self._locked = True
                return True
            if not blocking:
                return False
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        try:
            got = waiter.acquire(True, timeout)
        except BaseException:
            with self._guard:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise
            self.release()  # it was handed over just as the wait was cut: pass it on
            raise
        if not got:
            with self._guard:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    return False
        return True  # handed over by release: still locked, now ours

    def release(self) -> None:
        with self._guard:
            if not self._locked:
                raise RuntimeError("release unlocked lock")
            if self._waiters:
                self._waiters.popleft().release()  # stays locked: ownership passes
            else:
                self._locked = False

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_adjusted = False


def adjust_httpcore(http_module: Any) -> None:
    """Fit httpcore to gevent, once gevent has patched the process: the OS's poll for its
    idle-connection check, and fair locks for its HTTP/2 connections. It swaps module attributes, so
    it changes httpcore for every client in the process, the host's own too: the upstream calls it
    only when the host asked (``adjust_httpcore``).

    Each time httpcore takes a connection from its pool (and again when one comes back), it asks
    every idle connection whether the server closed it, with a zero-timeout ``select.poll()``.
    gevent's patched poll turns each of those into watchers, a timer and a hub switch. A
    zero-timeout poll never blocks, so the original is safe, and much cheaper.

    Streams sharing an HTTP/2 connection take turns reading it under one lock; with gevent's lock a
    stream can starve behind a silent one (see ``FairLock``), so its connections get fair ones.

    It runs when the first stream opens, not at import, so it also works when the app was imported
    before gevent patched (gunicorn's ``preload_app``). It only ever swaps attributes that hold the
    ``select`` module and httpcore's lock class; if httpcore's internals change it logs a warning
    and changes nothing. Only clients passed in with ``client=`` go through httpcore: the default
    one has its own pool.
    """
    global _adjusted
    if _adjusted or not patched("select"):
        return
    _adjusted = True
    core = http_module.__name__.replace("httpx", "httpcore")
    try:
        utils = importlib.import_module(f"{core}._utils")
        if getattr(utils, "select", None) is not sys.modules["select"]:
            raise LookupError(f"{core}._utils.select is not the select module")
        http2 = sys.modules.get(f"{core}._sync.http2")  # imported with httpcore when h2 is installed
        if http2 is not None and getattr(http2, "Lock", None) is not getattr(
                sys.modules.get(f"{core}._synchronization"), "Lock", object()):
            raise LookupError(f"{core}._sync.http2.Lock is not {core}'s lock")
        utils.select = types.SimpleNamespace(  # type: ignore[attr-defined]
            poll=unpatched("poll"), select=unpatched("select"), POLLIN=select.POLLIN
        )
        if http2 is not None:
            http2.Lock = FairLock  # type: ignore[attr-defined]
    except Exception as exc:
        log.warning("could not adjust %s for gevent (%s); its idle-connection check stays correct but costs "
                    "more CPU per request, and HTTP/2 streams can wait behind each other", core, exc)
        return
    log.info("gevent: %s's idle-connection check uses the OS's poll%s", core,
             ", and its HTTP/2 connections fair locks" if http2 is not None else "")


def httpcore_adjusted() -> bool:
    return _adjusted


def native_thread(target: Any, name: str) -> None:
    """Run ``target`` in an OS thread of its own, even where gevent made ``threading`` start greenlets:
    for work that blocks in C (SQLite), which a greenlet would do on the hub's time."""
    if patched("threading"):
        import gevent.monkey

        gevent.monkey.get_original("_thread", "start_new_thread")(target, ())
    else:
        threading.Thread(target=target, name=name, daemon=True).start()


def native_lock() -> Any:
    """A lock of the OS, even where gevent patched ``threading``: shared by greenlets and an OS thread
    (the state file's writer). Hold it only for a few statements, never across anything that yields."""
    if patched("threading"):
        import gevent.monkey

        return gevent.monkey.get_original("_thread", "allocate_lock")()
    return threading.Lock()


def native_sleep() -> Any:
    """``time.sleep`` as the OS gives it, for OS threads started by ``native_thread``."""
    if patched("time"):
        import gevent.monkey

        return gevent.monkey.get_original("time", "sleep")
    import time

    return time.sleep


def offload(function: Callable[[], T]) -> T:
    """``function()``, run in an OS thread while the calling greenlet waits cooperatively (gevent's
    threadpool); a plain call where gevent is not in charge."""
    if patched("threading"):
        import gevent

        # What it raises comes back as a value and is raised here: an exception that left the pool's
        # function would also be printed, with its traceback, by gevent's hub (a flood, when a shared
        # state file breaks under a watcher that asks ten times a second).
        ok, value = gevent.get_hub().threadpool.apply(_caught, (function,))
        if ok:
            return value  # type: ignore[no-any-return]
        raise value
    return function()


def _caught(function: Callable[[], T]) -> tuple[bool, Any]:
    try:
        return True, function()
    except BaseException as exc:
        return False, exc
