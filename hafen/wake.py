"""Wake the controller as soon as new work is written, instead of at its next idle pass.

A datagram on a unix socket in the data directory: sending never blocks and
fails quietly when no controller listens.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path


def notify(path: Path) -> None:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(b"w", str(path))


def listen(path: Path, event: threading.Event) -> None:
    """Set event whenever a datagram arrives (in a daemon thread)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))

    def serve() -> None:
        while True:
            sock.recv(16)
            event.set()

    threading.Thread(target=serve, daemon=True, name="wake").start()
