"""What the proxies on the other nodes saw: their agents' reports (edge/report.py), which a thread follows in
the agent service's log while there are such proxies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hafen.edge import report
from hafen.engine.base import Engine

# A proxy whose agent said nothing for this long may be taking requests nobody counts.
SILENT_AFTER = 3 * report.HEARTBEAT + 5
# How far back the log is read when the controller starts: the requests the proxies took while it was down.
LOOK_BACK = 24 * 3600.0


@dataclass
class _Node:
    heard: float = 0.0  # when its newest report was written (epoch seconds, the daemon's stamp)
    open: dict[str, int] | None = None
    seen: dict[str, float] = field(default_factory=dict)


class RemoteEdges:
    def __init__(self, engine: Engine, service: str, on_request: Callable[[], None],
                 on_traffic: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.service = service
        self.on_request = on_request
        self.on_traffic = on_traffic
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._watched: frozenset[str] = frozenset()
        self._stop: threading.Event | None = None

    def follow(self, wanted: bool) -> None:
        """Follow the agents' log (in a thread) while there are proxies on other nodes, and only then."""
        if wanted and self._stop is None:
            self._stop = threading.Event()
            threading.Thread(target=self.engine.follow_service_logs, name="edge-reports", daemon=True,
                             args=(self.service, time.time() - LOOK_BACK, self.feed, self._stop)).start()
        elif not wanted and self._stop is not None:
            self._stop.set()
            self._stop = None
            with self._lock:
                self._nodes.clear()

    def stop(self) -> None:
        self.follow(False)

    def feed(self, line: str, at: float | None = None) -> None:
        """One line of the agents' log, written at `at` (now if not given): a report replayed from before
        the controller started counts as old as it is, so a dead agent's last words hold no sleep."""
        found = report.parse(line)
        if found is None:
            return
        written = time.time() if at is None else at
        with self._lock:
            node = self._nodes.setdefault(found.node, _Node())
            if written >= node.heard:
                node.heard, node.open = written, found.open
            fresh = {h: ts for h, ts in found.seen.items() if ts > node.seen.get(h, 0.0)}
            node.seen.update(fresh)
            watched = self._watched
        if fresh and self.on_traffic is not None:
            self.on_traffic()
        if not watched.isdisjoint(fresh):
            self.on_request()

    def watch(self, hosts: Iterable[str]) -> None:
        with self._lock:
            self._watched = frozenset(hosts)

    def last_seen(self) -> dict[str, float]:
        """The newest request of each host at any of the proxies."""
        newest: dict[str, float] = {}
        with self._lock:
            for node in self._nodes.values():
                for host, ts in node.seen.items():
                    if ts > newest.get(host, 0.0):
                        newest[host] = ts
        return newest

    def open_requests(self) -> dict[str, int]:
        """The requests the proxies have open now, by upstream address, summed."""
        total: dict[str, int] = {}
        with self._lock:
            for node in self._nodes.values():
                for address, count in (node.open or {}).items():
                    total[address] = total.get(address, 0) + count
        return total

    def silent(self, nodes: Iterable[str]) -> list[str]:
        """Those of these nodes whose proxy's agent has not reported lately, or whose proxy did not answer."""
        now = time.time()
        with self._lock:
            return [n for n in nodes if n not in self._nodes or now - self._nodes[n].heard > SILENT_AFTER
                    or self._nodes[n].open is None]
