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
import types
from typing import Any

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


_adjusted = False


def adjust_httpcore(http_module: Any) -> None:
    """Give httpcore's idle-connection check the OS's poll, once gevent has patched select.

    Each time httpcore takes a connection from its pool (and again when one comes back), it asks
    every idle connection whether the server closed it, with a zero-timeout ``select.poll()``.
    gevent's patched poll turns each of those into watchers, a timer and a hub switch. A
    zero-timeout poll never blocks, so the original is safe, and much cheaper.

    It runs when the first stream opens, not at import, so it also works when the app was imported
    before gevent patched (gunicorn's ``preload_app``). It only ever swaps one attribute that holds
    the ``select`` module; if httpcore's internals change it logs a warning and changes nothing.
    Only clients passed in with ``client=`` go through httpcore: the default one has its own pool.
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
        utils.select = types.SimpleNamespace(  # type: ignore[attr-defined]
            poll=unpatched("poll"), select=unpatched("select"), POLLIN=select.POLLIN
        )
    except Exception as exc:
        log.warning("could not adjust %s's idle-connection check for gevent (%s); it stays correct but "
                    "costs more CPU per request", core, exc)
        return
    log.info("gevent: %s's idle-connection check uses the OS's poll", core)


def httpcore_adjusted() -> bool:
    return _adjusted
