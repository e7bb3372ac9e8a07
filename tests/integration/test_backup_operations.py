"""Backups of demo instances on a real swarm, to a real off-host target (rclone's REST server for
restic, in a container the tests start): back up, verify, restore in place, restore into a new
instance, clone; bad input; the target down, full, or the password wrong; a controller killed in
the middle of each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import PREFIX, Plane

pytestmark = pytest.mark.integration


def login(plane: Plane, name: str, password: str) -> Any:
    client = plane.http(f"{name}.localhost")
    assert client.post("/login", json={"username": "admin", "password": password}).status_code == 200
    return client


def notes(client: Any) -> list[str]:
    return [n["body"] for n in client.get("/notes").json()]


def snapshots(plane: Plane, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = plane.json("backups", name)["items"]
    return items


def verified(plane: Plane, name: str, snapshot: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        item = next(s for s in snapshots(plane, name) if s["id"] == snapshot)
        return item if item["verification"] in ("verified", "failed") else None

    result: dict[str, Any] = plane.wait_until(done, timeout=timeout, interval=1)
    return result


def sandboxes(plane: Plane) -> set[str]:
    return {s for s in plane.labelled()["services"] if f"{PREFIX}-sbx-" in s}


def services_of(plane: Plane, *names: str) -> set[str]:
    return set().union(*(plane.labelled(n)["services"] for n in names))


def kill_controller(plane: Plane) -> None:
    os.kill(int((plane.data_dir / "controller.pid").read_text()), signal.SIGKILL)
    time.sleep(1)


def operation(plane: Plane, name: str, kind: str) -> dict[str, Any]:
    ops = plane.json("show", name)["operations"]
    return next(op for op in ops if op["kind"] == kind)


@pytest.fixture
def demo(plane: Plane, instance_name: str) -> Iterator[tuple[str, Any]]:
    """A demo instance with a note and a file, logged in."""
    data = plane.create(instance_name, "demo")
    client = login(plane, instance_name, data["password"])
    assert client.post("/notes", json={"body": "before"}).status_code == 201
    assert client.put("/files/agenda.txt", content=b"agenda v1").status_code == 201
    yield instance_name, client


def test_backup_verify_restore_in_place_and_clone(plane: Plane, demo: tuple[str, Any]) -> None:
    name, client = demo
    assert client.put("/files/slides.bin", content=os.urandom(1024 * 1024)).status_code == 201
    first = plane.json("backup", name)
    assert first["status"] == "ok" and len(first["id"]) == 8 and first["size"] > 1024 * 1024
    result = verified(plane, name, first["id"])
    assert result["verification"] == "verified", result["verification_error"]
    assert not sandboxes(plane)

    # an incremental backup adds little
    assert client.post("/notes", json={"body": "after"}).status_code == 201
    assert client.put("/files/agenda.txt", content=b"agenda v2").status_code == 201
    second = plane.json("backup", name)
    assert second["added"] < first["added"] / 10  # the megabyte of slides is not written again

    # restore in place: the note and file made after the first backup are gone
    plane.hafen("restore", name, first["id"], "--yes")
    assert notes(client) == ["before"]
    assert client.get("/files/agenda.txt").text == "agenda v1"
    shown = plane.json("show", name)
    assert shown["state"] == "running" and shown["replicas"]["running"] == 1
    reasons = [s["reason"] for s in snapshots(plane, name)]
    assert "safety" in reasons

    # a clone is independent of its source
    clone = plane.json("clone", name, f"{name}-c")
    try:
        copy = login(plane, f"{name}-c", clone["password"])
        assert notes(copy) == ["before"]
        assert copy.get("/files/agenda.txt").text == "agenda v1"
        assert copy.post("/notes", json={"body": "only in the clone"}).status_code == 201
        assert notes(client) == ["before"]
    finally:
        plane.hafen("erase", f"{name}-c", "--yes", check=False)
    audit = plane.json("audit", "--instance", name)
    assert {"restore", "clone", "backup"} <= {e["action"] for e in audit}


def test_restore_into_the_name_of_an_erased_instance(plane: Plane, demo: tuple[str, Any]) -> None:
    name, _ = demo
    snapshot = plane.json("backup", name)["id"]
    plane.hafen("erase", name, "--yes")
    assert [s["id"] for s in snapshots(plane, name)][-1] == snapshot  # still listed, by the name
    restored = plane.json("restore", name, snapshot, "--into", name)
    client = login(plane, name, restored["password"])  # a new generated password, shown once
    assert notes(client) == ["before"]
    assert client.get("/files/agenda.txt").text == "agenda v1"


def test_bad_restores_are_refused_and_change_nothing(plane: Plane, demo: tuple[str, Any]) -> None:
    name, client = demo
    snapshot = plane.json("backup", name)["id"]
    other = plane.create(f"{name}-o", "demo")["name"]
    try:
        before = (len(snapshots(plane, name)), services_of(plane, name, other))
        cases = [
            (["restore", name, snapshot, "--into", other], 4, "exists already"),
            (["restore", name, "0123456789abcdef", "--yes"], 3, "no backup"),
            (["restore", name, "../etc", "--yes"], 2, "hex digits"),
            (["restore", other, snapshot, "--yes"], 3, "no backup"),  # a backup of another instance
            (["restore", "nosuchinstance", snapshot, "--yes"], 3, ""),
            (["clone", name, other], 4, "exists already"),
            (["backup-policy", name, "--schedule", "every day"], 2, "cron"),
        ]
        for args, code, message in cases:
            result = plane.hafen(*args, check=False)
            assert result.returncode == code, (args, result.stderr)
            assert result.stderr.startswith("error: ") and message in result.stderr and "Traceback" not in result.stderr
        typed = subprocess.run([sys.executable, "-m", "hafen", "restore", name, snapshot], input="wrong\n",
                               env=plane.env, capture_output=True, text=True, timeout=60)
        assert typed.returncode == 2 and "nothing was changed" in typed.stderr
        plane.hafen("lock", name, "--action", "restore", "--reason", "event today")
        locked = plane.hafen("restore", name, snapshot, "--yes", check=False)
        assert locked.returncode == 4 and "event today" in locked.stderr
        assert (len(snapshots(plane, name)), services_of(plane, name, other)) == before
        assert notes(client) == ["before"]
    finally:
        plane.hafen("erase", other, "--yes", check=False)


def test_an_unreachable_target_fails_the_backup_and_the_next_scheduled_one_succeeds(
        plane: Plane, demo: tuple[str, Any]) -> None:
    name, client = demo
    target = plane.backup_target()
    target.stop(timeout=1)
    try:
        failed = plane.hafen("backup", name, check=False)
        assert failed.returncode == 6
        last = failed.stderr.strip().splitlines()[-1]  # (the lines before: the steps, as it went)
        assert last.startswith("error: backup of") and "the repository is unreachable" in last, failed.stderr
        assert plane.json("show", name)["state"] == "running"
        assert notes(client) == ["before"]
    finally:
        target.start()
    plane.hafen("backup-policy", name, "--schedule", "* * * * *", "--enable")
    try:
        ok = plane.wait_until(lambda: [s for s in snapshots(plane, name)
                                       if s["reason"] == "scheduled" and s["status"] == "ok"], timeout=180, interval=2)
        assert ok
    finally:
        plane.hafen("backup-policy", name, "--disable")


def test_a_wrong_repository_password_writes_nothing(plane: Plane, demo: tuple[str, Any]) -> None:
    name, _ = demo
    plane.hafen("backup", name)  # the repository exists, with the right password
    password_file = plane.data_dir / "backup-password"
    right = password_file.read_bytes()
    target = plane.backup_target()
    files_before = target.exec_run("find /data -type f").output
    password_file.write_bytes(b"not the password")
    try:
        failed = plane.hafen("backup", name, check=False)
    finally:
        password_file.write_bytes(right)
    assert failed.returncode == 6 and "wrong repository password" in failed.stderr, failed.stderr
    assert target.exec_run("find /data -type f").output == files_before
    assert snapshots(plane, name)[0]["status"] == "failed"


def test_a_full_target_fails_clearly_and_the_repository_still_checks(plane: Plane, demo: tuple[str, Any]) -> None:
    name, client = demo
    plane.hafen("backup", name)
    target = plane.backup_target()
    # leave a few MB free on the target, then back up more than that
    assert target.exec_run("sh -c 'dd if=/dev/zero of=/data/filler bs=1M count=1000 2>/dev/null; true'").exit_code == 0
    target.exec_run("sh -c 'rm -f /data/filler; dd if=/dev/zero of=/data/filler bs=1M count=$(( $(df -m /data "
                    "| tail -1 | tr -s \" \" | cut -d\" \" -f4) - 3 )) 2>/dev/null'")
    try:
        big = os.urandom(12 * 1024 * 1024)
        assert client.put("/files/big.bin", content=big).status_code == 201
        failed = plane.hafen("backup", name, check=False)
        assert failed.returncode == 6 and "full" in failed.stderr, failed.stderr
        assert plane.json("show", name)["state"] == "running"
    finally:
        target.exec_run("rm -f /data/filler")
    plane.hafen("repository", "--check")
    state = plane.wait_until(lambda: (r := plane.json("repository")).get("last_check") and
                             not r["maintenance_running"] and r, timeout=180, interval=2)
    assert state["check_ok"] is True, state


def test_a_killed_controller_finishes_backup_restore_and_verification(plane: Plane, demo: tuple[str, Any]) -> None:
    name, client = demo
    # during a backup (its job runs on without the controller)
    backup = subprocess.Popen([sys.executable, "-m", "hafen", "backup", name, "--no-wait", "--json"], env=plane.env,
                              stdout=subprocess.PIPE, text=True)
    backup.communicate(timeout=60)
    plane.wait_until(lambda: f"{PREFIX}-{name}_backup" in plane.labelled(name)["services"], timeout=60, interval=0.2)
    kill_controller(plane)
    plane.hafen("up", "--detach")
    first = plane.wait_until(lambda: [s for s in snapshots(plane, name) if s["status"] == "ok"], timeout=120)[0]
    # the verification that follows, killed while its sandbox is up
    plane.wait_until(lambda: sandboxes(plane), timeout=120, interval=0.2)
    kill_controller(plane)
    plane.hafen("up", "--detach")
    assert verified(plane, name, first["id"])["verification"] == "verified"
    plane.wait_until(lambda: not sandboxes(plane), timeout=60)

    # during a restore in place, once the web service has been stopped
    assert client.post("/notes", json={"body": "after"}).status_code == 201
    restore = subprocess.Popen([sys.executable, "-m", "hafen", "restore", name, first["id"], "--yes"], env=plane.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        plane.wait_until(lambda: any(s["name"] == "restore" and s["state"] == "running"
                                     for s in operation(plane, name, "restore")["steps"]), timeout=120, interval=0.2)
        kill_controller(plane)
        assert plane.json("show", name)["state"] == "restoring"
        plane.hafen("up", "--detach")
        _, err = restore.communicate(timeout=300)
    finally:
        if restore.poll() is None:
            restore.kill()
    assert restore.returncode == 0, err
    shown = plane.json("show", name)
    assert shown["state"] == "running"
    assert notes(client) == ["before"]
    assert not {s for s in plane.labelled(name)["services"] if s.endswith(("_backup", "_restore"))}


def test_verification_catches_a_corrupted_pack(plane: Plane, demo: tuple[str, Any]) -> None:
    """Runs last in this file: it damages the shared repository for a moment (and mends it after)."""
    name, client = demo
    assert client.put("/files/unique.bin", content=os.urandom(256 * 1024)).status_code == 201
    target = plane.backup_target()
    marker = "/tmp/before-backup"
    target.exec_run(f"touch {marker}")
    time.sleep(1)
    snapshot = plane.json("backup", name)["id"]
    verified(plane, name, snapshot)
    packs = target.exec_run(f"find /data/hafen/data -type f -newer {marker} -size +100k").output.decode().split()
    assert packs, "the backup wrote no pack of its own"
    pack = packs[0]
    original = target.exec_run(f"base64 -w0 {pack}").output.decode()
    try:
        # flip bytes in the middle of the pack
        target.exec_run(["sh", "-c", f"printf 'garbage!' | dd of={pack} bs=1 seek=4096 conv=notrunc 2>/dev/null"])
        failed = plane.hafen("verify", name, snapshot, check=False)
        assert failed.returncode == 6, failed.stderr
        item = next(s for s in snapshots(plane, name) if s["id"] == snapshot)
        assert item["verification"] == "failed"
        assert item["verification_error"].startswith("restore failed"), item["verification_error"]
        problems = plane.json("show", name)["backups"]["problems"]
        assert any("verification of backup" in p for p in problems)
        assert not sandboxes(plane)
    finally:
        target.exec_run(["sh", "-c", f"echo {original} | base64 -d > {pack}"])
    assert json.loads(json.dumps(plane.json("repository")))["repository"].startswith("rest:")
