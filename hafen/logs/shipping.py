"""The controller's own log lines, sent to the collector of its node like every container's."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
from datetime import UTC, datetime


class CollectorHandler(logging.handlers.SysLogHandler):
    """Syslog over UDP in the form Docker's driver sends (RFC 5424, tagged `prefix..controller/`), one
    datagram a line (a traceback's lines arrive like a container's)."""

    def __init__(self, prefix: str, port: int) -> None:
        super().__init__(("127.0.0.1", port), socktype=socket.SOCK_DGRAM)
        self.append_nul = False
        self.tag = f"{prefix}..controller/"
        self.host = socket.gethostname()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stamp = datetime.fromtimestamp(record.created, tz=UTC).isoformat().replace("+00:00", "Z")
            pri = self.encodePriority(self.facility, self.mapPriority(record.levelname))
            for line in text.splitlines():
                data = f"<{pri}>1 {stamp} {self.host} {self.tag} {os.getpid()} {self.tag} - {line}"
                self.socket.sendto(data.encode("utf-8", "replace")[:65000], self.address)  # type: ignore[attr-defined]
        except Exception:
            self.handleError(record)
