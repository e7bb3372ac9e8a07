"""Changes that overlap on a real swarm: a newer desired state takes over at once, concurrent creates all run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import WEB_PORT, Plane

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(plane: Plane) -> Iterator[httpx.Client]:
    token = plane.hafen("user", "token", "admin", "--name", "concurrency", "--scope", "write").stdout.strip()
    with httpx.Client(base_url=f"http://127.0.0.1:{WEB_PORT}/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.fixture
def names(plane: Plane) -> Iterator[list[str]]:
    """The names of the instances this test made (see `fresh`); each is erased afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        plane.hafen("erase", name, "--yes", check=False)


def fresh(names: list[str], stem: str) -> str:
    name = f"c{stem}-{os.getpid() % 1000}-{len(names)}"
    names.append(name)
    return name


def instance(api: httpx.Client, name: str) -> dict[str, Any] | None:
    response = api.get(f"/instances/{name}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def operation(api: httpx.Client, op_id: int) -> dict[str, Any]:
    response = api.get(f"/operations/{op_id}")
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def at_a_wait_step(api: httpx.Client, op_id: int, timeout: float = 120) -> None:
    """Return once the operation waits for services it started (a step that takes seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = operation(api, op_id)
        assert op["state"] in ("pending", "running"), op
        step = next((s for s in op["steps"] if s["state"] != "done"), None)
        if step and step["name"].startswith("wait:"):
            return
        time.sleep(0.05)
    raise AssertionError(f"operation {op_id} never reached a wait step")


def settles(api: httpx.Client, name: str, state: str | None, timeout: float) -> float:
    """Seconds until the instance is in `state` (None: gone), never in error on the way."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        data = instance(api, name)
        if data is not None:
            assert data["state"] != "error", data["error"]
        if (data is None and state is None) or (data is not None and data["state"] == state):
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{name} not {state or 'gone'} within {timeout}s: {instance(api, name)}")


def post(api: httpx.Client, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.post(path, json=body or {})
    assert response.status_code == 202, response.text
    data: dict[str, Any] = response.json()
    return data


def test_stop_during_a_create_takes_over_at_once(plane: Plane, api: httpx.Client, names: list[str]) -> None:
    name = fresh(names, "stop")
    create = subprocess.Popen([sys.executable, "-m", "hafen", "create", name, "--app", "demo"], env=plane.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    plane.wait_until(lambda: instance(api, name), timeout=60, interval=0.1)
    create_op = instance(api, name)["operations"][-1]  # type: ignore[index]
    at_a_wait_step(api, create_op["id"])
    stop = post(api, f"/instances/{name}/stop")

    assert settles(api, name, "stopped", timeout=15) < 15
    superseded = operation(api, create_op["id"])
    assert superseded["state"] == "superseded"
    assert superseded["error"] == f"superseded by stop (operation {stop['id']})"
    assert operation(api, stop["id"])["state"] == "succeeded"
    # the waiting CLI says so in one line, with the conflict exit code
    _, stderr = create.communicate(timeout=30)
    assert create.returncode == 4, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"error: create of {name} did not finish: superseded by stop (operation {stop['id']})")


def test_scale_during_a_create_brings_it_up_scaled(api: httpx.Client, names: list[str]) -> None:
    name = fresh(names, "scale")
    create = post(api, "/instances", {"name": name, "app": "demo"})
    at_a_wait_step(api, create["id"])
    scale = post(api, f"/instances/{name}/scale", {"replicas": 2})

    # the whole bring-up, scaled: seconds on a quiet machine, more beside other test runs
    settles(api, name, "running", timeout=90)
    assert operation(api, create["id"])["state"] == "superseded"
    assert operation(api, scale["id"])["state"] == "succeeded"
    data = instance(api, name)
    assert data is not None and data["replicas"] == {"desired": 2, "running": 2, "set": 2, "autoscaled": None,
                                                     "floor": None}


def test_restart_during_a_start(plane: Plane, api: httpx.Client, names: list[str]) -> None:
    name = fresh(names, "restart")
    plane.create(name, "demo")
    plane.hafen("stop", name)
    start = post(api, f"/instances/{name}/start")
    at_a_wait_step(api, start["id"])
    restart = post(api, f"/instances/{name}/restart")

    settles(api, name, "running", timeout=90)
    assert operation(api, start["id"])["state"] == "superseded"
    assert operation(api, restart["id"])["state"] == "succeeded"
    assert plane.http(f"{name}.localhost").get("/health").status_code == 200


def test_erase_right_after_create(api: httpx.Client, names: list[str]) -> None:
    name = fresh(names, "erase")
    create = post(api, "/instances", {"name": name, "app": "demo"})
    erase = post(api, f"/instances/{name}/erase", {"confirm": name})

    assert settles(api, name, None, timeout=20) < 20
    assert operation(api, erase["id"])["state"] == "succeeded"
    assert operation(api, create["id"])["state"] == "superseded"


def test_ten_creates_at_once_all_run(plane: Plane, api: httpx.Client, names: list[str]) -> None:
    wanted = [fresh(names, "many") for _ in range(10)]
    answers: dict[str, httpx.Response] = {}
    barrier = threading.Barrier(len(wanted))

    def create(name: str) -> None:
        with httpx.Client(base_url=str(api.base_url), headers=dict(api.headers), timeout=60) as client:
            barrier.wait()
            answers[name] = client.post("/instances", json={"name": name, "app": "demo"})

    threads = [threading.Thread(target=create, args=(name,)) for name in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(wanted, 202)

    def all_done() -> bool:
        ops = [operation(api, answers[name].json()["id"]) for name in wanted]
        failed = [(op["instance"], op["error"]) for op in ops if op["state"] == "failed"]
        assert not failed, failed
        return all(op["state"] == "succeeded" for op in ops)

    plane.wait_until(all_done, timeout=600, interval=2)
    assert {name: instance(api, name)["state"] for name in wanted} == dict.fromkeys(wanted, "running")  # type: ignore[index]
