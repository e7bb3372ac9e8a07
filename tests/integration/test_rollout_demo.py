"""A fleet rollout over five demo instances on a real swarm, through the CLI, to a version that is broken
(demo 2.1 of the tests' catalogue: its migration fails half-way): the canary's update fails and rolls
back, the rollout stops there, and no other instance was touched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import Plane
from tests.integration.test_backup_operations import login, notes

pytestmark = pytest.mark.integration

NAMES = [f"roll{k}" for k in range(1, 6)]


@pytest.fixture
def fleet(plane: Plane) -> Iterator[dict[str, Any]]:
    plane.running_backup_target()  # an update starts with a backup
    with ThreadPoolExecutor(max_workers=5) as pool:  # created at once, as operators do
        created = dict(zip(NAMES, pool.map(lambda name: plane.create(name, "demo"), NAMES), strict=True))
    try:
        yield created
    finally:
        with ThreadPoolExecutor(max_workers=5) as pool:
            list(pool.map(lambda name: plane.hafen("erase", name, "--yes", check=False), NAMES))


def test_a_broken_version_fails_on_the_canary_and_touches_nothing_else(plane: Plane, fleet: dict[str, Any]) -> None:
    clients = {name: login(plane, name, data["password"]) for name, data in fleet.items()}
    for name, client in clients.items():
        assert client.post("/notes", json={"body": f"note of {name}"}).status_code == 201

    result = plane.hafen("update", "--app", "demo", "--version", "2.1", "--canary-instance", "roll3",
                         "--batch", "2", "--json", check=False, timeout=900)
    assert result.returncode != 0, result.stdout
    rollout = json.loads(result.stdout)
    assert rollout["state"] == "failed" and rollout["error"].startswith("roll3: update to 2.1 failed")
    states = {item["instance"]: item["state"] for item in rollout["items"]}
    assert states == {"roll3": "rolled back", "roll1": "not touched", "roll2": "not touched",
                      "roll4": "not touched", "roll5": "not touched"}
    assert {item["instance"]: item["version"] for item in rollout["items"]} == dict.fromkeys(NAMES, "1.0")

    for name, client in clients.items():
        assert client.get("/health").json()["version"] == "1.0"
        assert notes(client) == [f"note of {name}"]  # the canary's data came back from its backup
        operations = plane.json("show", name)["operations"]
        assert [o["state"] for o in operations if o["kind"] == "update"] == (
            ["rolled back"] if name == "roll3" else [])
    shown = plane.json("rollout", "show", str(rollout["id"]))
    assert shown["state"] == "failed"
