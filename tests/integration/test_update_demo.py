"""Updates of a demo instance on a real swarm, through the CLI, with the tests' catalogue (tests/catalog):
demo 2.0 migrates its schema; 2.1 fails half-way through its migration (after deleting the notes); 2.2
never starts its web service. A failed update puts the old version back with its data; the controller
killed with SIGKILL at several steps of an update finishes it, or its rollback, once it is back."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import PREFIX, Plane
from tests.integration.test_backup_operations import kill_controller, login, notes, operation

pytestmark = pytest.mark.integration


def version(client: Any) -> str:
    return str(client.get("/health").json()["version"])


@pytest.fixture
def demo(plane: Plane, instance_name: str) -> Iterator[tuple[str, Any]]:
    plane.running_backup_target()  # an update starts with a backup
    data = plane.create(instance_name, "demo")
    client = login(plane, instance_name, data["password"])
    assert client.post("/notes", json={"body": "before"}).status_code == 201
    yield instance_name, client


class Watcher(threading.Thread):
    """Asks the instance's domain every 0.2 s during an update: what people and API clients get."""

    def __init__(self, plane: Plane, domain: str) -> None:
        super().__init__(daemon=True)
        self.client = plane.http(domain)
        self.stop = threading.Event()
        self.seen: list[tuple[int, str, str]] = []  # status, Retry-After, a bit of the body

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                response = self.client.get("/health")
            except Exception as exc:  # what a client would see, recorded
                self.seen.append((0, "", type(exc).__name__))
                continue
            self.seen.append((response.status_code, response.headers.get("retry-after", ""), response.text[:300]))


def watched_update(plane: Plane, name: str, version: str) -> tuple[dict[str, Any], Watcher]:
    """`hafen update NAME --version V --json` while a client asks the instance every 0.2 s."""
    watcher = Watcher(plane, f"{name}.localhost")
    watcher.start()
    try:
        return plane.json("update", name, "--version", version), watcher
    finally:
        watcher.stop.set()
        watcher.join()


def test_a_new_version_migrates_and_broken_ones_roll_back_with_the_data(plane: Plane, demo: tuple[str, Any]) -> None:
    name, client = demo
    assert plane.json("show", name)["update"]["versions"][0] == "2.0"

    broken = plane.hafen("update", name, "--version", "2.1", check=False)
    error = broken.stderr.strip().splitlines()[-1]  # after the steps, as they went
    assert broken.returncode != 0 and "rolled back to 1.0" in error and "setup job setup failed" in error, error
    shown = plane.json("show", name)
    assert shown["version"] == "1.0" and shown["state"] == "running"
    assert version(client) == "1.0" and notes(client) == ["before"]  # the half-done migration deleted them

    broken = plane.hafen("update", name, "--version", "2.2", check=False)
    assert broken.returncode != 0 and "rolled back" in broken.stderr and "web" in broken.stderr, broken.stderr
    assert version(client) == "1.0" and notes(client) == ["before"]

    updated, watcher = watched_update(plane, name, "2.0")
    assert updated["state"] == "succeeded" and updated["update"]["plan"] == "migrating"
    assert version(client) == "2.0" and notes(client) == ["before"]
    shown = plane.json("show", name)
    assert shown["version"] == "2.0" and shown["state"] == "running"
    backups = plane.json("backups", name)["items"]
    assert [b["reason"] for b in backups].count("update") == 3 and all(b["version"] == "1.0" for b in backups)
    # while it updated: the updating page (503, Retry-After, a page that reloads itself), never a proxy error
    updating = [s for s in watcher.seen if s[0] == 503]
    assert updating and all(s[1] and "being updated" in s[2] and "http-equiv=refresh" in s[2] for s in updating)
    # Known gap (README, known limits): for about a second after the proxy leaves the instance's network, a
    # request can follow its stale DNS answer out of the host (a bare 404 from the sandbox's gateway here, or
    # no answer at all: the watcher's timeout, seen once in a CI run)
    runs = [(k, len(list(g))) for k, g in itertools.groupby((s[0], s[2][:40]) for s in watcher.seen)]
    glitches = [s for s in watcher.seen if s[0] not in (200, 503)]
    assert all(s[0] == 404 or s[2] == "ReadTimeout" for s in glitches) and len(glitches) <= 10, runs


def test_a_new_build_of_the_same_version_rolls_over_without_a_failed_request(
        plane: Plane, demo: tuple[str, Any]) -> None:
    """The demo image of 1.0 rebuilt (its label changes, so its id does): the instance is offered the new
    build and rolls over start-first while a client keeps asking."""
    name, client = demo
    tag = "hafen/demo:1.0"
    old = plane.docker.api.inspect_image(tag)["Id"]
    rebuilt = subprocess.run(["docker", "build", "-q", "--label", f"hafen.test-rebuild={name}", "-t", tag, "-"],
                             input=f"FROM {old}\n", capture_output=True, text=True, check=True).stdout.strip()
    try:
        assert rebuilt != old
        # the controller sees the new build on one of its next passes
        plane.wait_until(lambda: plane.json("show", name)["update"]["rebuilt"], timeout=60, interval=1)
        updated, watcher = watched_update(plane, name, "1.0")
        assert updated["state"] == "succeeded" and updated["update"]["plan"] == "rolling"
        web = plane.docker.api.inspect_service(f"{PREFIX}-{name}_web")["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert web["Image"] == rebuilt
        assert len(watcher.seen) > 20 and {s[0] for s in watcher.seen} == {200}, watcher.seen
        assert notes(client) == ["before"]
    finally:
        subprocess.run(["docker", "tag", old, tag], check=True)


def _update_killed_at(plane: Plane, name: str, to: str, step: str) -> subprocess.CompletedProcess[str]:
    """Start `hafen update`, SIGKILL the controller once `step` runs, start it again; the command's outcome."""
    update = subprocess.Popen([sys.executable, "-m", "hafen", "update", name, "--version", to], env=plane.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        plane.wait_until(lambda: any(s["name"] == step and s["state"] == "running"
                                     for s in operation(plane, name, "update")["steps"]), timeout=240, interval=0.2)
        kill_controller(plane)
        assert plane.json("show", name)["state"] == "updating"
        plane.hafen("up", "--detach")
        out, err = update.communicate(timeout=600)
    finally:
        if update.poll() is None:
            update.kill()
    return subprocess.CompletedProcess(update.args, update.returncode, out, err)


def test_a_controller_killed_during_an_update_finishes_it_or_its_rollback(
        plane: Plane, demo: tuple[str, Any]) -> None:
    name, client = demo
    during_migration = _update_killed_at(plane, name, "2.1", "wait:setup")
    assert during_migration.returncode != 0 and "rolled back" in during_migration.stderr
    assert version(client) == "1.0" and notes(client) == ["before"]

    during_rollback = _update_killed_at(plane, name, "2.2", "rollback:restore")
    assert during_rollback.returncode != 0 and "rolled back" in during_rollback.stderr
    assert version(client) == "1.0" and notes(client) == ["before"]

    during_backup = _update_killed_at(plane, name, "2.0", "backup")
    assert during_backup.returncode == 0, during_backup.stderr
    assert version(client) == "2.0" and notes(client) == ["before"]
    shown = plane.json("show", name)
    assert shown["state"] == "running" and shown["version"] == "2.0"
    assert [o["state"] for o in shown["operations"] if o["kind"] == "update"] == ["succeeded", "rolled back",
                                                                                  "rolled back"]
    assert not {s for s in plane.labelled(name)["services"] if s.endswith(("_backup", "_restore", "_smoke"))}
