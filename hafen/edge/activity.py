"""What the edge saw of each domain: the newest request in the proxy's access log.

The proxy writes a JSON line per finished request (see config.access_logging) into the edge directory;
Caddy rolls the file over at a size, keeping one older file. `AccessLog` reads what is new since its
last read and follows a roll-over (the old file is read to its end first). A reader that starts again
(the controller restarted) reads both files from their start: the idle clock of an instance is the
edge's data, not the controller's uptime. `Watcher` reads in a thread a few times a second, so that the
first request to a sleeping instance wakes the controller at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("hafen.edge")

POLL_INTERVAL = 0.2


class AccessLog:
    """Incremental reader of one access log and its rolled-over predecessor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._inode = 0
        self._rest = b""  # an unfinished last line, completed by the next read
        self.lines = 0  # lines read, for the figures
        # called with each entry read (hafen's metrics count requests, codes and latency per host)
        self.on_entry: Callable[[dict[str, Any]], None] | None = None

    def _rolled(self) -> list[Path]:
        """The older files Caddy kept (access-<time>.log), oldest first."""
        return sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"))

    def _open(self) -> bool:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return False
        self._file, self._inode, self._rest = handle, os.fstat(handle.fileno()).st_ino, b""
        return True

    def read(self) -> dict[str, float]:
        """The newest request time (epoch seconds) of each host among the lines written since the last read."""
        seen: dict[str, float] = {}
        if self._file is None:
            for older in self._rolled():  # the first read: what the edge kept from before
                with contextlib.suppress(OSError), older.open("rb") as handle:
                    self._parse(handle.read().splitlines(), seen)
            if not self._open():
                return seen
        assert self._file is not None
        self._consume(seen)
        try:
            current = self.path.stat().st_ino
        except FileNotFoundError:
            current = self._inode
        if current != self._inode:  # rolled over: the old file was read to its end above
            self._file.close()
            if self._open():
                self._consume(seen)
        return seen

    def _consume(self, seen: dict[str, float]) -> None:
        assert self._file is not None
        data = self._rest + self._file.read()
        lines = data.split(b"\n")
        self._rest = lines.pop()
        self._parse(lines, seen)

    def _parse(self, lines: Iterable[bytes], seen: dict[str, float]) -> None:
        for line in lines:
            if not line:
                continue
            try:
                entry = json.loads(line)
                host, ts = entry["request"]["host"], float(entry["ts"])
            except (ValueError, KeyError, TypeError):
                continue
            self.lines += 1
            if self.on_entry is not None:
                self.on_entry(entry)
            host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if ts > seen.get(host, 0.0):
                seen[host] = ts

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Watcher:
    """Keeps the newest request time per host from the access log, read in a daemon thread; calls
    `on_request` when a request for one of the `watched` hosts (the sleeping instances') comes in, and
    `on_traffic` when any request does."""

    def __init__(self, path: Path, on_request: Callable[[], None],
                 on_traffic: Callable[[], None] | None = None) -> None:
        self.log = AccessLog(path)
        self.on_request = on_request
        self.on_traffic = on_traffic
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._watched: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="edge-activity")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def poll(self) -> None:
        """One read (the thread's step; unit tests call it directly)."""
        fresh = self.log.read()
        with self._lock:
            for host, ts in fresh.items():
                if ts > self._seen.get(host, 0.0):
                    self._seen[host] = ts
            watched = self._watched
        self._caught_up.set()
        if fresh and self.on_traffic is not None:
            self.on_traffic()
        if watched and not watched.isdisjoint(fresh):
            self.on_request()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except OSError as exc:
                log.warning("edge activity: %s", exc)
            self._stop.wait(POLL_INTERVAL)

    def caught_up(self, timeout: float = 0) -> bool:
        """Whether the log has been read once since the start (before that, nobody is idle)."""
        return self._caught_up.wait(timeout)

    def watch(self, hosts: Iterable[str]) -> None:
        with self._lock:
            self._watched = frozenset(hosts)

    def last_seen(self) -> dict[str, float]:
        with self._lock:
            return dict(self._seen)
