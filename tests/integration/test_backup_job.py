"""The backup job image driven directly with Docker, without a controller.

hafen/backup:1 runs as one-off containers against a hafen/postgres:15 database, a volume and a
hafen/backup-target:1 REST server (rclone), all on a bridge network of this run. Local repositories
live in named volumes; a long-running "tools" container writes files into the volumes and keeps the
small tmpfs volume mounted (a tmpfs volume loses its contents once no container uses it).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

pytestmark = pytest.mark.integration

PREFIX = os.environ.get("HAFEN_TEST_PREFIX", "hit")
RUN = f"{PREFIX}-backup-{secrets.token_hex(3)}"
LABELS = {"hafen.prefix": PREFIX, "hafen.test-run": RUN}
IMAGES = ("hafen/postgres:15", "hafen/backup:1", "hafen/backup-target:1")
SCHEMA_QUERY = "SELECT app || '.' || name FROM django_migrations ORDER BY id DESC LIMIT 1"
SPEC = {"database": {"host": f"{RUN}-db", "name": "app", "user": "app"},
        "tables": ["items", "notes", "missing_table"], "schema_query": SCHEMA_QUERY, "volumes": ["media"]}
FULL = "the repository's storage is full (no space left on device)"
HEX64 = re.compile(r"[0-9a-f]{64}")

MEDIA = {
    "a.txt": b"hello\n",
    "empty.txt": b"",
    "sub/deeper/b.bin": secrets.token_bytes(3_000_000),  # incompressible, so that the first backup is large
    "sub/c.json": json.dumps({"n": list(range(2000))}).encode(),
}


# Flips 64 bytes in the middle of the largest file under argv[1].
FLIP = """
import pathlib, sys
pack = max((p for p in pathlib.Path(sys.argv[1]).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
data = bytearray(pack.read_bytes())
middle = len(data) // 2
data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
pack.write_bytes(data)
"""


def volume_print(files: dict[str, bytes]) -> dict[str, Any]:
    """The contract's volume fingerprint, computed here from what the test wrote."""
    entries = sorted([path, len(data), hashlib.sha256(data).hexdigest()] for path, data in files.items())
    listing = json.dumps(entries, separators=(",", ":"))
    return {"files": len(entries), "bytes": sum(len(data) for data in files.values()),
            "sha256": hashlib.sha256(listing.encode()).hexdigest()}


@dataclass
class Job:
    code: int
    output: str
    seconds: float

    def lines(self, kind: str) -> list[str]:
        return [line.removeprefix(f"HAFEN-{kind} ") for line in self.output.splitlines()
                if line.startswith(f"HAFEN-{kind} ")]

    @property
    def result(self) -> dict[str, Any]:
        results = self.lines("RESULT")
        assert self.code == 0 and len(results) == 1 and not self.lines("ERROR"), self.output[-3000:]
        value: dict[str, Any] = json.loads(results[0])
        return value

    @property
    def error(self) -> str:
        errors = self.lines("ERROR")
        assert self.code != 0 and len(errors) == 1 and not self.lines("RESULT"), self.output[-3000:]
        return errors[0]


class Lab:
    def __init__(self, client: docker.DockerClient, tmp: Path) -> None:
        self.client = client
        self.tmp = tmp
        self.jobs = itertools.count(1)  # jobs may start from two threads at once
        for name, text in (("restic_password", "correct horse battery staple"), ("wrong_password", "nope"),
                           ("db_password", secrets.token_hex(12)), ("instance_secrets", "opaque\nsecrets\n"),
                           ("admin_password", "admin")):
            (tmp / name).write_text(text + "\n")
            (tmp / name).chmod(0o644)  # the postgres image reads its password as user postgres
        self.network = client.networks.create(f"{RUN}-net", driver="bridge", labels=LABELS)
        for volume in ("media", "big", "cache", "damaged"):
            client.volumes.create(f"{RUN}-{volume}", labels=LABELS)
        client.volumes.create(f"{RUN}-small", labels=LABELS, driver="local",
                              driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=8m"})
        self.db = self.start("db", "hafen/postgres:15", environment={"POSTGRES_USER": "app", "POSTGRES_DB": "app"},
                             volumes={str(tmp / "db_password"): {"bind": "/run/secrets/db_password", "mode": "ro"}})
        self.target = self.start("target", "hafen/backup-target:1")
        self.small_target = self.start("small-target", "hafen/backup-target:1", tmpfs={"/data": "size=8m"})
        self.tools = self.start("tools", "hafen/backup:1", entrypoint=["sleep", "infinity"], volumes={
            f"{RUN}-media": {"bind": "/volumes/media", "mode": "rw"},
            f"{RUN}-big": {"bind": "/volumes/big", "mode": "rw"},
            f"{RUN}-damaged": {"bind": "/repos/damaged", "mode": "rw"},
            f"{RUN}-small": {"bind": "/repos/small", "mode": "rw"},
        })

    def start(self, role: str, image: str, **kwargs: Any) -> Any:
        return self.client.containers.run(image, name=f"{RUN}-{role}", detach=True, labels=LABELS,
                                          network=self.network.name, **kwargs)

    def close(self) -> None:
        for container in self.client.containers.list(all=True, filters={"label": f"hafen.test-run={RUN}"}):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        for volume in self.client.volumes.list(filters={"label": f"hafen.test-run={RUN}"}):
            with contextlib.suppress(docker.errors.APIError):
                volume.remove(force=True)
        with contextlib.suppress(docker.errors.APIError):
            self.network.remove()

    # -- helpers -----------------------------------------------------------------------------------------

    def wait_healthy(self, container: Any, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            container.reload()
            if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
                return
            time.sleep(0.5)
        raise AssertionError(f"{container.name} not healthy: {container.logs()[-2000:]!r}")

    def sql(self, statement: str) -> str:
        code, output = self.db.exec_run(["psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-U", "app", "-d", "app",
                                         "-c", statement])
        assert code == 0, output
        return str(output.decode().strip())

    def sh(self, script: str) -> str:
        code, output = self.tools.exec_run(["sh", "-ec", script])
        assert code == 0, output
        return str(output.decode())

    def write_media(self, files: dict[str, bytes], volume: str = "media") -> None:
        """Make the volume hold exactly these files."""
        self.sh(f"find /volumes/{volume} -mindepth 1 -delete")
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for folder in sorted({str(parent) for path in files for parent in Path(path).parents} - {"."}):
                info = tarfile.TarInfo(folder)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for path, data in files.items():
                info = tarfile.TarInfo(path)
                info.size = len(data)
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
        assert self.tools.put_archive(f"/volumes/{volume}", archive.getvalue())

    def repo(self, name: str, target: str = "target") -> str:
        return f"rest:http://{RUN}-{target}:8000/{name}"

    def job_container(self, *command: str, repo: str, password: str = "restic_password",
                      env: dict[str, str] | None = None, volumes: dict[str, dict[str, str]] | None = None) -> Any:
        number = next(self.jobs)
        secret_files = {"restic_password": password, "db_password": "db_password",
                        "instance_secrets": "instance_secrets", "admin_password": "admin_password"}
        mounts = {str(self.tmp / source): {"bind": f"/run/secrets/{name}", "mode": "ro"}
                  for name, source in secret_files.items()}
        mounts[f"{RUN}-cache"] = {"bind": "/cache", "mode": "rw"}
        mounts.update(volumes or {f"{RUN}-media": {"bind": "/volumes/media", "mode": "rw"}})
        environment = {"RESTIC_REPOSITORY": repo, "HAFEN_BACKUP_SPEC": json.dumps(SPEC), "HAFEN_INSTANCE": "demo",
                       "HAFEN_BACKUP_ID": f"b{number}", "HAFEN_MANIFEST": json.dumps({"app": "demo", "n": 1}),
                       "HAFEN_RETRIES": "1", "HAFEN_RETRY_WAIT": "1", **(env or {})}
        return self.client.containers.run("hafen/backup:1", list(command), name=f"{RUN}-job{number}",
                                          detach=True, labels=LABELS, network=self.network.name,
                                          environment=environment, volumes=mounts)

    def finish(self, container: Any, started: float, timeout: float = 300) -> Job:
        try:
            try:
                code = container.wait(timeout=timeout)["StatusCode"]
            except requests.exceptions.ConnectionError:  # the SDK's read timeout
                tail = container.logs(tail=40).decode(errors="replace")
                raise AssertionError(f"{container.name} still runs after {timeout} s:\n{tail}") from None
            return Job(code, container.logs(stdout=True, stderr=True).decode(errors="replace"),
                       time.monotonic() - started)
        finally:
            container.remove(force=True)

    def job(self, *command: str, timeout: float = 300, **kwargs: Any) -> Job:
        started = time.monotonic()
        return self.finish(self.job_container(*command, **kwargs), started, timeout)

    def repo_files(self, name: str) -> list[str]:
        code, output = self.target.exec_run(["find", f"/data/{name}", "-type", "f"])
        assert code == 0, output
        return sorted(output.decode().split())


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    client = docker.from_env(timeout=300)
    missing = [image for image in IMAGES if not client.images.list(name=image)]
    if missing:
        pytest.fail(f"images missing (build them: hafen images build --stale): {', '.join(missing)}")
    tmp = Path(tempfile.mkdtemp(prefix="hafen-backup-test-"))
    lab = None
    try:
        lab = Lab(client, tmp)
        lab.wait_healthy(lab.db)
        lab.sql("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);"
                "INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 2000) g;"
                "CREATE TABLE notes (id serial PRIMARY KEY, body text);"
                "INSERT INTO notes (body) SELECT repeat('note ', g) FROM generate_series(1, 50) g;"
                "CREATE TABLE django_migrations (id serial PRIMARY KEY, app text, name text);"
                "INSERT INTO django_migrations (app, name) VALUES ('motions', '0041_a'), ('motions', '0042_b');")
        lab.write_media(MEDIA)
        yield lab
    finally:
        if lab is not None:
            lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


EXPECTED: dict[str, Any] = {"tables": {"items": 2000, "notes": 50, "missing_table": None}, "schema": "motions.0042_b",
            "volumes": {"media": volume_print(MEDIA)}}


@pytest.fixture(scope="module")
def first(lab: Lab) -> Job:
    job = lab.job("backup", repo=lab.repo("main"))
    assert job.result
    return job


def test_backup_result_and_manifest(lab: Lab, first: Job) -> None:
    result = first.result
    assert set(result) == {"db_snapshot", "files_snapshot", "total_bytes", "added_bytes", "manifest", "seconds"}
    assert HEX64.fullmatch(result["db_snapshot"]) and HEX64.fullmatch(result["files_snapshot"])
    assert result["total_bytes"] >= len(MEDIA["sub/deeper/b.bin"]) and result["added_bytes"] > 2_000_000
    manifest = result["manifest"]
    assert manifest["fingerprint"] == EXPECTED
    assert manifest["app"] == "demo" and manifest["n"] == 1  # HAFEN_MANIFEST copied in
    assert manifest["db_snapshot"] == result["db_snapshot"] and manifest["dump_file"] == "/demo.sql"
    assert manifest["volumes"] == ["media"] and manifest["created"]
    for line in first.lines("PROGRESS"):
        assert set(json.loads(line)) == {"step", "percent", "message"}
    assert {json.loads(line)["step"] for line in first.lines("PROGRESS")} >= {"db", "files"}

    snapshots = lab.job("snapshots", "--instance", "demo", repo=lab.repo("main")).result["snapshots"]
    tags = {snap["id"]: set(snap["tags"]) for snap in snapshots}
    assert tags[result["db_snapshot"]] == {"hafen", "instance=demo", "backup=b1", "part=db"}
    assert tags[result["files_snapshot"]] == {"hafen", "instance=demo", "backup=b1", "part=files"}
    assert lab.job("snapshots", "--instance", "other", repo=lab.repo("main")).result == {"snapshots": []}
    assert lab.job("snapshots", repo=lab.repo("none-yet")).result == {"snapshots": []}


def test_second_backup_adds_much_less(lab: Lab, first: Job) -> None:
    lab.sql("UPDATE items SET name = 'changed' WHERE id = 7")
    lab.sh("echo more >> /volumes/media/a.txt")
    second = lab.job("backup", repo=lab.repo("main")).result
    assert second["files_snapshot"] != first.result["files_snapshot"]
    assert second["manifest"]["fingerprint"]["volumes"]["media"]["bytes"] == EXPECTED["volumes"]["media"]["bytes"] + 5
    assert second["added_bytes"] < first.result["added_bytes"] / 5, (second["added_bytes"], first.result)


def test_restore_brings_back_the_snapshot(lab: Lab, first: Job) -> None:
    lab.sql("DELETE FROM items WHERE id > 100; CREATE TABLE stray (x int); "
            "INSERT INTO django_migrations (app, name) VALUES ('motions', '0043_c')")
    lab.write_media({"a.txt": b"other\n", "new.txt": b"not in the backup"})
    restored = lab.job("restore", repo=lab.repo("main"), env={
        "HAFEN_SNAPSHOT": first.result["files_snapshot"], "HAFEN_VOLUMES": '["media"]'}).result
    assert set(restored) == {"manifest", "fingerprint", "seconds"}
    assert restored["manifest"] == first.result["manifest"]
    assert restored["fingerprint"] == EXPECTED
    assert lab.sql("SELECT count(*) FROM items") == "2000"
    assert lab.sql("SELECT to_regclass('stray') IS NULL") == "t"
    listing = lab.sh("cd /volumes/media && find . -type f | sort && sha256sum sub/deeper/b.bin")
    assert listing.split()[:4] == ["./a.txt", "./empty.txt", "./sub/c.json", "./sub/deeper/b.bin"]
    assert hashlib.sha256(MEDIA["sub/deeper/b.bin"]).hexdigest() in listing

    # check-instance: the live data's fingerprint is the manifest's; a login is a POST, 2xx is ok. The
    # target's rclone stands in for an app: it creates a repository on POST /?create=true (200), refuses
    # a POST without it (400).
    checked = lab.job("check-instance", repo=lab.repo("main"), env={
        "HAFEN_LOGIN_URL": f"http://{RUN}-target:8000/login-probe/?create=true", "HAFEN_ADMIN_USER": "admin"}).result
    assert checked == {"fingerprint": first.result["manifest"]["fingerprint"],
                       "login": {"ok": True, "status": 200, "error": ""}}
    refused = lab.job("check-instance", repo=lab.repo("main"),
                      env={"HAFEN_LOGIN_URL": f"http://{RUN}-target:8000/login-probe/"}).result
    assert refused["login"]["ok"] is False and refused["login"]["status"] == 400
    assert lab.job("check-instance", repo=lab.repo("main")).result["login"] is None


def test_wrong_password_writes_nothing(lab: Lab, first: Job) -> None:
    before = lab.repo_files("main")
    job = lab.job("backup", repo=lab.repo("main"), password="wrong_password")
    assert job.error == "wrong repository password"
    assert lab.repo_files("main") == before
    assert lab.job("snapshots", repo=lab.repo("main"), password="wrong_password").error == "wrong repository password"


def test_unreachable_target_fails_after_retries_then_works_once_back(lab: Lab, first: Job) -> None:
    lab.target.stop(timeout=5)
    try:
        job = lab.job("backup", repo=lab.repo("main"), env={"HAFEN_RETRIES": "2", "HAFEN_RETRY_WAIT": "1"})
        assert job.error.startswith("the repository is unreachable: "), job.error
        assert job.output.count("retry 1 of 2") >= 1 and job.output.count("retry 2 of 2") >= 1
        assert job.seconds >= 3  # waited 1 s, then 2 s

        # Down when the job starts, back while it waits: the retry succeeds.
        started = time.monotonic()
        waiting = lab.job_container("backup", repo=lab.repo("main"), env={"HAFEN_RETRIES": "5",
                                                                         "HAFEN_RETRY_WAIT": "2"})
        deadline = time.monotonic() + 60
        while b"retry 1 of 5" not in waiting.logs() and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        lab.target.start()
    back = lab.finish(waiting, started)
    assert "retry 1 of 5" in back.output
    assert HEX64.fullmatch(back.result["files_snapshot"])


def test_full_storage_is_a_clear_error_and_the_repository_stays_sound(lab: Lab) -> None:
    lab.sh("head -c 20000000 /dev/urandom > /volumes/big/big.bin")  # more than the 8 MB of either repository
    big = {f"{RUN}-big": {"bind": "/volumes/media", "mode": "ro"}}
    small_local = {**big, f"{RUN}-small": {"bind": "/repo", "mode": "rw"}}
    rest_repo = lab.repo("full", target="small-target")
    # One after the other: restic 0.14 hung or panicked twice in ~25 runs when its local backend hit the
    # full disk while another job ran beside it.
    local_job = lab.job("backup", repo="/repo", volumes=small_local, timeout=120)
    rest_job = lab.job("backup", repo=rest_repo, volumes=big, timeout=180)  # restic retries the 500s for ~45 s

    # A local repository (or rest-server's 507) says why; rclone answers a full disk with a bare
    # HTTP 500, so the job can only say what failed and that the storage may be full.
    assert local_job.error == FULL, local_job.output[-6000:]
    assert "storage may be full" in rest_job.error and "500" in rest_job.error, rest_job.error

    for repo, volumes in ((rest_repo, big), ("/repo", small_local)):
        checked = lab.job("maintain", "--check", repo=repo, volumes=volumes).result
        assert checked == {"prune": False, "check": {"ok": True, "subset": "", "message": ""}}
        # the half backup's database snapshot was forgotten
        assert lab.job("snapshots", repo=repo, volumes=volumes).result == {"snapshots": []}


def test_damaged_pack_is_found_by_a_data_check(lab: Lab) -> None:
    repo = {f"{RUN}-damaged": {"bind": "/repo", "mode": "rw"}, f"{RUN}-media": {"bind": "/volumes/media", "mode": "rw"}}
    lab.write_media(MEDIA)
    backup = lab.job("backup", repo="/repo", volumes=repo).result
    # The largest pack holds the big media file: flip 64 bytes in its middle.
    code, output = lab.tools.exec_run(["python3", "-c", FLIP, "/repos/damaged/data"])
    assert code == 0, output

    structure = lab.job("maintain", "--check", repo="/repo", volumes=repo).result
    assert structure["check"]["ok"] is True  # sizes and the index still agree: only reading the data tells
    data = lab.job("maintain", "--check", "--read-data-subset", "1/1", repo="/repo", volumes=repo).result
    assert data["check"]["ok"] is False and data["check"]["subset"] == "1/1"
    assert "does not match" in data["check"]["message"], data["check"]["message"]

    restore = lab.job("restore", repo="/repo", volumes=repo, env={
        "HAFEN_SNAPSHOT": backup["files_snapshot"], "HAFEN_VOLUMES": '["media"]'})
    assert restore.error.startswith("the repository is damaged: "), restore.error


def test_forget_removes_snapshots(lab: Lab, first: Job) -> None:
    repo = lab.repo("main")
    ids = [first.result["db_snapshot"], first.result["files_snapshot"]]
    gone = "0" * 64
    assert lab.job("forget", *ids, gone, repo=repo).result == {"forgotten": [*ids, gone]}
    left = {snap["id"] for snap in lab.job("snapshots", repo=repo).result["snapshots"]}
    assert left and not left & set(ids)
    assert lab.job("forget", *ids, repo=repo).result == {"forgotten": ids}  # already gone: not an error
    pruned = lab.job("maintain", "--prune", "--check", repo=repo).result
    assert pruned == {"prune": True, "check": {"ok": True, "subset": "", "message": ""}}
