"""Two socket helpers that the client's side and the upstream's both need."""

from __future__ import annotations

import _socket
import os
import socket


def fileno_of(sock: socket.socket | None) -> int | None:
    """The client socket's descriptor, for the watchdog to poll; None if there is none to watch."""
    if sock is None:
        return None
    try:
        return sock.fileno()
    except (OSError, ValueError):
        return None


def shutdown(sock: socket.socket) -> None:
    """Shut ``sock`` down in both directions without touching the object: a blocked read wakes
    with end-of-stream. Works the same on TLS sockets, whose own ``shutdown`` would unwrap them
    under the reader's feet."""
    try:
        fd = sock.fileno()
        if fd < 0:
            return
        # The C-level socket type: no gevent wrapper, nothing that could yield to the hub.
        dup = _socket.socket(fileno=os.dup(fd))
    except (OSError, ValueError):
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()
