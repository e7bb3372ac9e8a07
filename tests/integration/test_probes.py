"""Health probes: one that checks every 250 ms while a container starts, then one every 30 s (300 s: database,
cache) once it has passed (hafen-probe)."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.conftest import PREFIX, Plane

pytestmark = pytest.mark.integration


def _finished(entry: dict[str, str]) -> float:
    # Docker writes nanoseconds; Python 3.11 takes at most microseconds.
    stamp = entry["End"]
    head, _, rest = stamp.partition(".")
    digits = "".join(c for c in rest if c.isdigit())[:6]
    zone = rest[len("".join(c for c in rest if c.isdigit())):]
    return datetime.fromisoformat(f"{head}.{digits}{zone.replace('Z', '+00:00')}").timestamp()


def test_probes_rest_once_a_container_is_healthy(plane: Plane, instance_name: str) -> None:
    name = instance_name
    plane.create(name, "demo")
    containers = {svc: plane.containers(f"{PREFIX}-{name}_{svc}")[0] for svc in ("db", "redis", "web")}
    window = 12.0
    time.sleep(window)
    now = time.time()
    for svc, container in containers.items():
        container.reload()
        health = container.attrs["State"]["Health"]
        assert health["Status"] == "healthy", (svc, health)
        recent = [e for e in health["Log"] if now - _finished(e) < window]
        # probes that did not rest would have finished dozens here
        assert len(recent) <= 1, (svc, health["Log"])
        # and while it started, one probe checked every 250 ms itself: Docker keeps the last five
        assert len(health["Log"]) <= 2 and health["Log"][0]["ExitCode"] == 0, (svc, health["Log"])
