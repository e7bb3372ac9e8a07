"""The controller's own log lines, sent to the collector of its node like every container's."""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime

FACILITY_USER = 1
SEVERITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class CollectorHandler(logging.Handler):
    """Syslog over UDP in the form Docker's driver sends (RFC 5424, tagged `prefix..controller/`), one
    datagram a line (a traceback's lines arrive like a container's).

    Attached to the root logger: Django's logging set-up, which the web server's thread may run after the
    controller has started, replaces the handlers of the loggers it configures and closes every handler;
    this one survives both (a closed handler's next line opens a new socket).
    """

    def __init__(self, prefix: str, port: int) -> None:
        super().__init__()
        self.address = ("127.0.0.1", port)
        self.tag = f"{prefix}..controller/"
        self.host = socket.gethostname()
        self.sock: socket.socket | None = None
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stamp = datetime.fromtimestamp(record.created, tz=UTC).isoformat().replace("+00:00", "Z")
            pri = FACILITY_USER * 8 + SEVERITY.get(record.levelname, 6)
            if self.sock is None:
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for line in text.splitlines():
                data = f"<{pri}>1 {stamp} {self.host} {self.tag} {os.getpid()} {self.tag} - {line}"
                self.sock.sendto(data.encode("utf-8", "replace")[:65000], self.address)
        except OSError:
            self.sock = None  # a new socket for the next line; this one is lost, as UDP may lose it anyway
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        super().close()
