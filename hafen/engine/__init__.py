"""Engines by name; the settings choose one."""

from functools import cache

from hafen.config import get_settings
from hafen.engine.base import Engine, LogDriver


def collector_driver(port: int) -> LogDriver | None:
    """Syslog over UDP to the log collector on the task's own node (a global service publishing `port`).

    UDP, because Docker's syslog driver connects when a container starts: over TCP or a unix socket a
    collector that is down fails the start of every container; a datagram socket starts regardless (lines
    sent meanwhile are lost). Docker 20.10 keeps a local copy beside it (dual logging), from which
    `docker logs` and `docker service logs` still read.
    """
    if not port:
        return None
    return LogDriver("syslog", (("syslog-address", f"udp://127.0.0.1:{port}"), ("syslog-format", "rfc5424micro")))


@cache
def get_engine() -> Engine:
    settings = get_settings()
    kind = settings.engine
    if kind == "fake":
        from hafen.engine.fake import FakeEngine

        fake = FakeEngine()
        fake.log_driver = collector_driver(settings.log_port)
        return fake
    from hafen.engine.swarm import SwarmEngine

    engine = SwarmEngine(registry=settings.registry)
    engine.log_driver = collector_driver(settings.log_port)
    return engine
