"""A Docker engine that stops answering in the middle of a create: hafen waits it out.

dockerd is frozen (SIGSTOP) for longer than hafen's client timeout while a demo
instance is being created; meanwhile the API answers every read of the instance
and its operation, and after SIGCONT the create ends with the instance running.

The engine is shared with everything else on this machine: the pause is kept as
short as the client timeout allows, and dockerd is always continued.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from hafen.engine.swarm import TIMEOUT
from tests.conftest import PREFIX, WEB_PORT, Plane

pytestmark = pytest.mark.integration

PAUSE = TIMEOUT + 5  # long enough for a call that is waiting when the pause begins to time out


def dockerd_pid() -> int:
    pidfile = Path("/var/run/docker.pid")
    if pidfile.exists():
        return int(pidfile.read_text().strip())
    pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()
    assert len(pids) == 1, f"not one dockerd but {pids}"
    return int(pids[0])


def test_create_survives_a_paused_engine(plane: Plane, instance_name: str) -> None:
    name = instance_name
    plane.wait_until(lambda: plane.containers(f"{PREFIX}-edge"), timeout=120)
    token = plane.hafen("user", "token", "admin", "--name", "engine-pause", "--scope", "write").stdout.strip()
    api = httpx.Client(base_url=f"http://127.0.0.1:{WEB_PORT}/api/v1", headers={"Authorization": f"Bearer {token}"},
                       timeout=60)
    created = api.post("/instances", json={"name": name, "app": "demo"})
    assert created.status_code == 202, created.text
    op_id = created.json()["id"]

    # the first services exist: the create is under way
    plane.wait_until(lambda: plane.labelled(name)["services"], timeout=60, interval=0.2)
    assert api.get(f"/instances/{name}").status_code == 200  # the token's first use is written now, not in the pause

    pid = dockerd_pid()
    answers: list[tuple[str, int, float]] = []
    os.kill(pid, signal.SIGSTOP)
    paused = time.monotonic()
    try:
        while time.monotonic() - paused < PAUSE:
            for path in (f"/instances/{name}", f"/operations/{op_id}"):
                started = time.monotonic()
                answers.append((path, api.get(path).status_code, time.monotonic() - started))
            time.sleep(1)
    finally:
        os.kill(pid, signal.SIGCONT)
    pause = time.monotonic() - paused

    assert pause > TIMEOUT
    assert answers and all(200 <= status < 300 for _, status, _ in answers), answers
    assert max(took for _, _, took in answers) < 5, answers  # reads never wait on the engine

    def finished() -> dict[str, object] | None:
        op = api.get(f"/operations/{op_id}").json()
        return op if op["finished_at"] else None

    op = plane.wait_until(finished, timeout=300, interval=1)
    assert (op["state"], op["error"]) == ("succeeded", ""), op
    assert api.get(f"/instances/{name}").json()["state"] == "running"
    # the controller did meet the timeout, and took it for an outage rather than a failure
    log = (plane.data_dir / "controller.log").read_text()
    assert f"did not answer within {TIMEOUT} s" in log
    assert "internal error" not in log
