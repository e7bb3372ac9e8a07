"""The control plane as a process: run in the foreground, detach, stop."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from hafen import wake
from hafen.config import Settings
from hafen.errors import Conflict, ControlPlaneDown, HafenError

log = logging.getLogger("hafen.controller")


def running_pid(settings: Settings) -> int | None:
    """The pid of the running control plane: whoever holds the lock (a dead one holds none)."""
    lock_path = settings.data_dir / "controller.lock"
    if not lock_path.exists():
        return None
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(settings.pid_path.read_text().strip())
            except (FileNotFoundError, ValueError):
                return -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _lock(settings: Settings) -> IO[str]:
    handle = (settings.data_dir / "controller.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise Conflict(f"the control plane runs already (pid {running_pid(settings)})") from None
    return handle


# pg_advisory_lock's key of "the controller of this database" (the bytes of "hafenctl")
CONTROLLER_LOCK_KEY = int.from_bytes(b"hafenctl", "big") >> 1


def database_lock(settings: Settings) -> Any:
    """On PostgreSQL, a connection of its own that holds the database's controller lock for as long as the
    process lives: a second control plane against the same database (on another host, with another data
    directory) refuses to start. None on SQLite, where the data directory's lock file is enough."""
    if settings.database_scheme != "postgresql":
        return None
    from django.db import connections

    holder = connections.create_connection("default")
    with holder.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [CONTROLLER_LOCK_KEY])
        (taken,) = cursor.fetchone()
    if not taken:
        holder.close()
        raise Conflict(f"another control plane runs against this database ({settings.database_display})")
    return holder


def _serve_web(settings: Settings) -> None:
    from django.core.wsgi import get_wsgi_application
    from waitress import serve

    serve(get_wsgi_application(), host=settings.web_host, port=settings.web_port, threads=4, _quiet=True)


def serve(settings: Settings) -> None:
    """Run the controller (and the web server) until SIGTERM or SIGINT."""
    from hafen.controller.loop import Controller
    from hafen.edge.client import CaddyEdge, Edge, FakeEdge
    from hafen.engine import get_engine
    from hafen.engine.fake import FakeEngine

    lock = _lock(settings)
    holder = database_lock(settings)
    settings.pid_path.write_text(str(os.getpid()))
    engine = get_engine()
    edge: Edge = (
        FakeEdge(engine) if isinstance(engine, FakeEngine) else CaddyEdge(settings.edge_dir, settings.http_port)
    )
    controller = Controller(engine, edge, settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: controller.stop())
    wake.listen(settings.wake_path, controller.wake)
    threading.Thread(target=_serve_web, args=(settings,), daemon=True, name="web").start()
    try:
        controller.run()
    finally:
        with contextlib.suppress(FileNotFoundError):
            settings.pid_path.unlink()
        if holder is not None:
            holder.close()
        lock.close()


def detach(settings: Settings, timeout: float = 60) -> int:
    """Start the control plane in the background; return its pid once it beats."""
    from hafen.instances.models import ControlPlane

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = settings.log_path.open("a")
    started = time.time()
    child = subprocess.Popen(
        [sys.executable, "-m", "hafen", "serve"],
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise ControlPlaneDown(
                f"the control plane exited at start: {_tail(settings.log_path)} (log {settings.log_path})"
            )
        plane = ControlPlane.objects.filter(pk=1, pid=child.pid).first()
        if plane and plane.beat_at and plane.beat_at.timestamp() >= started:
            return child.pid
        time.sleep(0.2)
    child.terminate()
    raise ControlPlaneDown(f"the control plane did not become ready in {timeout:.0f}s; see {settings.log_path}")


def _tail(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(empty log)"


def stop(settings: Settings, timeout: float = 30) -> int | None:
    pid = running_pid(settings)
    if pid is None:
        return None
    if pid < 0:
        raise HafenError(f"the control plane holds its lock but wrote no pid file ({settings.pid_path})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(settings) is None:
            return pid
        time.sleep(0.2)
    raise HafenError(f"the control plane (pid {pid}) did not stop in {timeout:.0f}s")
