"""The controller's side of the pipeline: read the collector's spool in batches into the store.

The primary collector appends every line it receives to `spool/YYYYMMDD-HHMM.log` (one file a minute).
Each batch reads on from where the last one ended (the offsets are stored in the same transaction as the
lines, so a crash neither loses nor repeats lines), joins tracebacks per container, counts errors into
their groups, and deletes a minute's file once it is read to its end.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from django.db import close_old_connections

from hafen.instances.models import Instance
from hafen.logs import groups
from hafen.logs.parse import Assembler, Line, parse
from hafen.logs.store import Store

log = logging.getLogger("hafen.logs")

BATCH_BYTES = 4 * 1024 * 1024
POLL = 0.5  # seconds between looks at the spool while nothing comes
PRUNE_EVERY = 3600.0
SETTLE = 5.0  # a past minute's file is deleted only when nothing was written to it for this long


class Ingester:
    def __init__(self, spool: Path, store: Store, prefix: str, retention_seconds: float) -> None:
        self.spool = spool
        self.store = store
        self.prefix = prefix
        self.retention = retention_seconds
        self.assembler = Assembler()
        self._orgs: dict[str, str] = {}
        self._orgs_at = 0.0
        self._pruned_at = 0.0
        self.ingested = 0  # lines so far (for the benchmarks)

    def org_of(self, instance: str) -> str:
        if not instance:
            return ""
        if instance not in self._orgs or time.monotonic() - self._orgs_at > 10:
            self._orgs = {name: slug or "" for name, slug in
                          Instance.objects.values_list("name", "organisation__slug")}
            self._orgs_at = time.monotonic()
        return self._orgs.get(instance, "")

    def once(self) -> int:
        """Ingest one batch (at most BATCH_BYTES of each file); return how many lines it held."""
        if not self.spool.is_dir():
            return 0
        files = sorted(p for p in self.spool.iterdir() if p.suffix == ".log")
        if not files:
            return 0
        offsets = self.store.offsets()
        lines: list[tuple[Line, str]] = []
        occurrences: list[groups.Occurrence] = []
        done: dict[str, int] = {}
        finished: list[Path] = []
        for path in files:
            offset = offsets.get(path.name, 0)
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read(BATCH_BYTES)
                    at_end = not handle.read(1)
                size_now = path.stat().st_mtime
            except FileNotFoundError:
                continue
            complete = data[:data.rfind(b"\n") + 1]
            if complete:
                done[path.name] = offset + len(complete)
                for raw in complete.decode("utf-8", "replace").splitlines():
                    line = parse(raw)
                    if line is None or line.prefix != self.prefix:
                        continue
                    org = self.org_of(line.instance)
                    for event in self.assembler.feed(line):
                        occurrences.append(groups.occurrence(event, org))
                    lines.append((line, org))
            if (path != files[-1] and at_end and len(complete) == len(data)
                    and time.time() - size_now > SETTLE):
                finished.append(path)
                done[path.name] = -1
        if done:
            self.store.insert(lines, done)
            if occurrences:
                groups.record(occurrences)
        for path in finished:
            path.unlink(missing_ok=True)
        self.ingested += len(lines)
        return len(lines)

    def prune(self) -> None:
        before = time.time() - self.retention
        removed = self.store.prune(before)
        kinds = groups.prune(groups._when(before))
        if removed or kinds:
            log.info("logs: %d lines and %d kinds of error past the retention removed", removed, kinds)

    def run(self, stop: threading.Event) -> None:
        """Ingest until `stop` is set; prune past the retention every hour."""
        while not stop.is_set():
            try:
                if time.monotonic() - self._pruned_at > PRUNE_EVERY:
                    self._pruned_at = time.monotonic()
                    self.prune()
                if self.once() == 0:
                    stop.wait(POLL)
            except Exception:
                log.exception("logs: ingest failed")
                close_old_connections()
                stop.wait(5)


def spool_dir(data_dir: Path) -> Path:
    path = data_dir / "logs-spool"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
