"""A real control plane whose own database is PostgreSQL (HAFEN_DATABASE_URL): `hafen up` on a throw-away
PostgreSQL server creates, runs and erases a demo instance on the swarm.

A second control plane beside the shared one: its own prefix (hpg), ports and data directory, so it
disturbs neither the shared test plane nor a developer's installation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, Plane
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.integration

PREFIX = "hpg"
_OFFSET = int(os.environ.get("HAFEN_TEST_PORT_OFFSET", "0"))
DATABASE = "hafen_plane"
PORTS = (29080 + _OFFSET, 29443 + _OFFSET, 29765 + _OFFSET)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg_plane(postgres: PostgresServer) -> Iterator[tuple[Plane, subprocess.CompletedProcess[str]]]:
    """The control plane, and what `hafen up` printed."""
    data_dir = Path(tempfile.mkdtemp(prefix="hafen-test-pg-"))
    url = postgres.create_database(DATABASE)
    plane = Plane(data_dir, prefix=PREFIX, ports=PORTS,
                  env={"HAFEN_DATABASE_URL": url, "HAFEN_BACKUP_REPOSITORY": ""})
    plane.cleanup()
    try:
        up = plane.hafen("up", "--detach", timeout=1800)
        plane.hafen("backup-policy", "--disable")
        yield plane, up
    finally:
        log = data_dir / "controller.log"
        if log.exists():
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copyfile(log, ARTIFACTS / "controller-postgres.log")
        plane.hafen("down", check=False)
        plane.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_demo_instance_on_a_control_plane_with_postgresql(
    pg_plane: tuple[Plane, subprocess.CompletedProcess[str]], postgres: PostgresServer
) -> None:
    (plane, up), name = pg_plane, f"tpg-{os.getpid() % 1000}"
    assert f"database: PostgreSQL postgresql://hafen@127.0.0.1:{postgres.port}/{DATABASE}" in up.stderr
    assert "hafen.sqlite3" not in os.listdir(plane.data_dir)

    try:
        data = plane.create(name, "demo")
        assert data["state"] == "running"
        client = plane.http(data["domain"])
        assert client.post("/login", json={"username": "admin", "password": data["password"]}).status_code == 200

        # the state is PostgreSQL's: the instance, its operation and the controller's heartbeat
        def query(sql: str) -> list[str]:
            return postgres.psql(sql, database=DATABASE).split()

        assert query(f"SELECT state, desired_state FROM instances_instance WHERE name = '{name}'") == [
            "running|running"]
        assert query(f"SELECT kind, state FROM instances_operation WHERE instance_name = '{name}'") == [
            "create|succeeded"]
        assert query("SELECT beat_at IS NOT NULL FROM instances_controlplane") == ["t"]

        plane.hafen("erase", name, "--yes")
        assert query(f"SELECT count(*) FROM instances_instance WHERE name = '{name}'") == ["0"]
        assert not any(plane.labelled(name).values())
    finally:
        plane.hafen("erase", name, "--yes", check=False)

    # the password of the URL is in no output and no log
    log = (plane.data_dir / "controller.log").read_text()
    assert "database PostgreSQL postgresql://hafen@127.0.0.1" in log
    assert postgres.password not in up.stdout + up.stderr + log
