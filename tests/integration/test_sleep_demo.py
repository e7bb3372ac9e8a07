"""Sleep and wake of a demo instance on a real swarm, through the real edge: an instance with a 20 s idle
time falls asleep and the first request wakes it; an open websocket keeps it awake; a stopped instance
does not wake; the controller killed while an instance falls asleep or wakes converges once it is back.

The shared plane's instances never sleep (HAFEN_IDLE=never, tests/conftest.py); these set their own."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import Plane
from tests.integration.test_backup_operations import kill_controller, login, notes, operation

pytestmark = pytest.mark.integration

IDLE = 20


def state(plane: Plane, name: str) -> str:
    return str(plane.json("show", name)["state"])


def web_replicas(plane: Plane, name: str) -> int:
    return int(plane.json("show", name)["services"]["web"]["replicas"])


def asleep(plane: Plane, name: str, timeout: float = IDLE + 60) -> float:
    """Seconds until it sleeps with its web service at zero."""
    started = time.monotonic()
    plane.wait_until(lambda: state(plane, name) == "sleeping" and web_replicas(plane, name) == 0,
                     timeout=timeout, interval=1)
    return time.monotonic() - started


def first_answer(client: Any, path: str = "/health", timeout: float = 60) -> tuple[float, list[tuple[int, str]]]:
    """Ask until the app answers 200, as a person's page that reloads itself would; the seconds it took
    from the first request, and what came before."""
    started = time.monotonic()
    seen: list[tuple[int, str]] = []
    while time.monotonic() - started < timeout:
        response = client.get(path)
        if response.status_code == 200:
            return time.monotonic() - started, seen
        seen.append((response.status_code, response.headers.get("retry-after", "")))
        time.sleep(0.25)
    raise AssertionError(f"no answer after {timeout} s: {seen[-5:]}")


def test_an_idle_instance_sleeps_wakes_on_a_request_and_stays_awake_while_a_websocket_is_open(
        plane: Plane, instance_name: str) -> None:
    name = instance_name
    data = plane.create(name, "demo")
    client = login(plane, name, data["password"])
    assert client.post("/notes", json={"body": "before its sleep"}).status_code == 201
    plane.hafen("policy", name, "--idle", f"{IDLE}s", "--deep-sleep", "never")

    # asleep after its idle time, not before
    took = asleep(plane, name)
    assert took >= IDLE - 8, took  # (the last request was some seconds before the policy was set)
    shown = plane.json("show", name)
    assert shown["elastic"]["sleep"] == "light" and shown["services"]["db"]["running"] == 1
    assert shown["elastic"]["decisions"][0]["action"] == "sleep"

    # the first request: the waking page (never an error page of the proxy), then the app with its data
    page = plane.http(f"{name}.localhost").get("/", headers={"Accept": "text/html"})
    assert page.status_code == 503 and page.headers["retry-after"] == "2", page.text
    assert "waking up" in page.text and "http-equiv=refresh" in page.text
    woke, before = first_answer(plane.http(f"{name}.localhost"))
    assert woke < 30 and all(status == 503 for status, _ in before), before
    assert notes(client) == ["before its sleep"]  # its session is in the cache, which kept running
    assert state(plane, name) == "running"
    assert plane.json("show", name)["elastic"]["decisions"][0]["action"] == "wake"

    # an open websocket keeps it awake past its idle time; once closed, it falls asleep
    edge = socket.create_connection(("127.0.0.1", plane.http_port), timeout=10)
    edge.settimeout(None)  # the websocket is silent for longer than any read timeout
    # (no pings: the demo app does not answer them)
    with connect(f"ws://{name}.localhost:{plane.http_port}/ws", sock=edge, open_timeout=10, close_timeout=1,
                 ping_interval=None):
        time.sleep(IDLE + 12)
        assert state(plane, name) == "running"
        assert web_replicas(plane, name) == 1
    asleep(plane, name)

    # a stopped instance does not wake on a request; started again, it runs awake
    plane.hafen("stop", name)
    assert plane.http(f"{name}.localhost").get("/health").status_code == 503
    time.sleep(5)
    assert state(plane, name) == "stopped" and plane.json("show", name)["elastic"]["sleep"] is None
    plane.hafen("policy", name, "--idle", "never")
    plane.hafen("start", name)
    assert first_answer(plane.http(f"{name}.localhost"))[0] < 10

    # with a hold in its policy, the first GET wakes it and waits for the app instead of the waking page
    plane.hafen("policy", name, "--idle", f"{IDLE}s", "--hold", "20s")
    asleep(plane, name)
    started = time.monotonic()
    held = plane.http(f"{name}.localhost").get("/health", timeout=40)
    assert held.status_code == 200 and time.monotonic() - started < 20, (held.status_code, held.text[:200])
    assert notes(login(plane, name, data["password"])) == ["before its sleep"]  # (the stop ended the session)


def test_a_controller_killed_while_an_instance_falls_asleep_or_wakes_converges(
        plane: Plane, instance_name: str) -> None:
    name = instance_name
    data = plane.create(name, "demo")
    client = login(plane, name, data["password"])
    assert client.post("/notes", json={"body": "kept"}).status_code == 201
    plane.hafen("policy", name, "--idle", f"{IDLE}s", "--deep-sleep", "never")

    plane.wait_until(lambda: operation(plane, name, "sleep")["state"] in ("running", "succeeded"),
                     timeout=IDLE + 60, interval=0.5)
    kill_controller(plane)
    plane.hafen("up", "--detach", timeout=300)
    asleep(plane, name)  # the sleep finishes; nothing woke it by mistake (its idle clock is the edge's)
    time.sleep(3)
    assert state(plane, name) == "sleeping"

    assert plane.http(f"{name}.localhost").get("/health").status_code == 503  # this request wakes it
    plane.wait_until(lambda: operation(plane, name, "wake")["state"] in ("running", "succeeded"),
                     timeout=30, interval=0.2)
    kill_controller(plane)
    plane.hafen("up", "--detach", timeout=300)
    first_answer(plane.http(f"{name}.localhost"), timeout=90)
    plane.wait_until(lambda: state(plane, name) == "running", timeout=60, interval=1)
    assert notes(client) == ["kept"]


def test_an_events_floor_holds_while_load_is_low_and_is_released_after_it(plane: Plane, instance_name: str) -> None:
    name = instance_name
    plane.create(name, "demo")
    plane.hafen("policy", name, "--idle", f"{IDLE}s", "--deep-sleep", "never")
    now = datetime.now(UTC)
    end = now + timedelta(seconds=IDLE + 60)
    plane.hafen("event", "add", name, "--start", (now - timedelta(minutes=1)).isoformat(), "--end", end.isoformat(),
                "--participants", "150", "--title", "short assembly")
    # 150 participants: 2 web replicas (the demo app's table), at once, while nobody asks anything
    plane.wait_until(lambda: plane.json("show", name)["services"]["web"]["running"] == 2, timeout=60, interval=1)
    while datetime.now(UTC) < end - timedelta(seconds=5):
        shown = plane.json("show", name)
        assert shown["state"] == "running" and shown["services"]["web"]["replicas"] == 2, shown["elastic"]
        time.sleep(3)
    # over: back to its own single replica, then asleep after its idle time as before
    plane.wait_until(lambda: plane.json("show", name)["services"]["web"]["replicas"] in (0, 1), timeout=60, interval=1)
    asleep(plane, name)
    actions = [d["action"] for d in plane.json("show", name)["elastic"]["decisions"]]
    assert actions[:3] == ["sleep", "scale", "scale"], actions
