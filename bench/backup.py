"""Benchmark: backups of a big OpenSlides instance (issue 8): full, incremental, restore, verification.

One OpenSlides instance is grown to about --size-mb (default 1000) MB: generated motions in its
database (about 3 % of the size, through OpenSlides' own models inside its web container, so that
its element cache stays in step) and incompressible files in its media volume (the rest, written by
a short helper container). The backups go to a real off-host-like target as in the tests: a restic
REST server (`rclone serve restic`, image hafen/backup-target:1) on the installation's backup
network, its storage a directory on this machine's disk (a bind mount), not a tmpfs. The scheduled
policy is disabled, so only the benchmark's backups run.

Each run, interleaved:

1. baseline, backup: `pg_dump` of the same database (docker exec into the db task's container) to
   a file, plus `tar -c` of the same media volume, both to a directory on the same disk;
2. baseline, restore: `createdb` + `psql` of that dump into a scratch database of the same
   PostgreSQL, plus `tar -x` of that archive, again on the same disk;
3. full backup: the repository is wiped (its directory on the target removed, the target
   restarted so that rclone forgets what it listed); `hafen backup NAME` then initialises it again
   and writes everything (so a full backup here includes `restic init`);
4. the verification the controller queues after the backup (a restore into a sandbox, a
   fingerprint check and an admin login), waited for and timed from its operation record;
5. a small change (one new motion, one 100 KiB file), then `hafen backup NAME` again:
   incremental; its verification waited for (timed as well);
6. `hafen restore NAME SNAPSHOT --into NEW --yes`: a new instance from the latest backup; then
   `hafen erase NEW --yes` (timed, not counted).

Figures: medians (with min and max) of the runs; full and incremental backups against the
backup baseline, restore and verification against the restore baseline, incremental against
full. Goals (issue 8): full backup <= 60 s, restore <= 90 s, incremental <= 10 % of full. The
machine's CPU use during each phase (share of all cores, /proc/stat) says where the time goes.

Everything runs under the prefix "bbk" on the ports 37080/37443 (edge) and 37765 (control-plane
web), with a fresh temporary data directory; all objects it makes carry the label
hafen.prefix=bbk and are removed at the end, also after errors, Ctrl-C or SIGTERM.

    .venv/bin/python -m bench.backup [--size-mb 1000] [--runs 3]
    .venv/bin/python -m bench.backup --size-mb 100 --runs 1      # a quick small version

Results: bench/results/backup-<UTC timestamp>.json and backup-latest.json.
Exit status: 0 if every step worked and nothing was left over; 1 on a problem; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import (
    BenchPlane,
    conclude,
    docker,
    docker_lines,
    fmt,
    log,
    new_report,
    ratio,
    stats,
    table,
    wait_until,
)

PREFIX = "bbk"
HTTP_PORT = 37080
HTTPS_PORT = 37443
WEB_PORT = 37765
LABEL = f"hafen.prefix={PREFIX}"
INSTANCE = "big"
TARGET = f"{PREFIX}-backup-target"
TARGET_IMAGE = "hafen/backup-target:1"
REPO_DIR = "hafen"
REPOSITORY = f"rest:http://{TARGET}:8000/{REPO_DIR}"
HELPER_IMAGE = "hafen/backup:1"  # Debian with tar, coreutils and the PostgreSQL client
HELPER = f"{PREFIX}-helper"
SCRATCH_DB = "bbk_baseline"

DB_SHARE = 0.03  # of --size-mb in motions (the element cache holds all of it: keep it tens of MB)
MOTION_KB = 100
FILE_MB = 4
OP_TIMEOUT = 1800.0
VERIFY_TIMEOUT = 1800.0

GOALS = {"full_backup_s": 60.0, "restore_s": 90.0, "incremental_share_of_full": 0.10}

# Runs with OpenSlides' Python in the web container: N motions of about KB KiB of words each, saved
# through the models (agenda items, states and the element cache as OpenSlides makes them).
GROW = r"""
import random, sys
import django
from openslides.utils.main import setup_django_settings_module
setup_django_settings_module()
django.setup()
from openslides.motions.models import Motion
count, kb, tag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = random.Random(tag)
words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 11))) for _ in range(5000)]
for n in range(count):
    paragraphs, size = [], 0
    while size < kb * 1024:
        paragraph = " ".join(rng.choices(words, k=120))
        paragraphs.append("<p>" + paragraph + "</p>")
        size += len(paragraph) + 7
    Motion(title=f"Generated motion {tag}-{n}", text="".join(paragraphs)).save()
print(Motion.objects.count())
"""


class CpuMeter:
    """The share of all cores busy between start and stop (/proc/stat)."""

    @staticmethod
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    def __init__(self) -> None:
        self.busy, self.total = self.sample()

    def share(self) -> float | None:
        busy, total = self.sample()
        return round((busy - self.busy) / (total - self.total), 3) if total > self.total else None


class Timeline:
    """Where an operation's time goes: the controller's record of the operations started after it began
    (their current step and the job's progress message, digits masked), polled twice a second; the first
    time each is seen, in seconds from the start."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.entries: list[list[Any]] = []
        self.stop = threading.Event()
        with self.connect() as conn:
            self.after = conn.execute("SELECT coalesce(max(id), 0) FROM instances_operation").fetchone()[0]
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)

    def poll(self) -> None:
        seen: set[tuple[str, ...]] = set()
        while not self.stop.wait(0.5):
            try:
                with self.connect() as conn:
                    rows = conn.execute("SELECT id, kind, instance_name, state, steps FROM instances_operation "
                                        "WHERE id > ? ORDER BY id", (self.after,)).fetchall()
            except sqlite3.Error:
                continue
            for _, kind, instance, state, steps in rows:
                step = next((s for s in json.loads(steps or "[]") if s.get("state") != "done"), None)
                title = step["title"] if step else state
                detail = re.sub(r"[\d.]+", "#", str((step or {}).get("detail") or ""))
                key = (kind, "sandbox" if instance.startswith("sbx-") else instance, title, detail)
                if key not in seen:
                    seen.add(key)
                    self.entries.append([round(time.monotonic() - self.started, 1), *key])

    def finish(self) -> list[list[Any]]:
        self.stop.set()
        self.thread.join(5)
        return self.entries


def timed(step: Callable[[], Any]) -> tuple[float, float | None, Any]:
    """(seconds, CPU share of the machine, result) of one call."""
    cpu = CpuMeter()
    started = time.monotonic()
    result = step()
    return round(time.monotonic() - started, 3), cpu.share(), result


def machine() -> dict[str, Any]:
    """The load average and other test runs at this moment (the figures mean little on a busy machine)."""
    others = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True).stdout.split()
    return {"load": [round(v, 2) for v in os.getloadavg()], "pytest_processes": len(others)}


class Bench:
    def __init__(self, args: argparse.Namespace, plane: BenchPlane, report: dict[str, Any]) -> None:
        self.args, self.plane, self.report = args, plane, report
        self.problems: list[str] = report["problems"]
        self.target_dir = Path(tempfile.mkdtemp(prefix=f"hafen-{PREFIX}-target-", dir="/var/tmp"))
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"hafen-{PREFIX}-baseline-", dir="/var/tmp"))
        self.plane.env["HAFEN_BACKUP_REPOSITORY"] = REPOSITORY
        self.stack = f"{PREFIX}-{INSTANCE}"
        self.media_volume = f"{self.stack}_media"
        self.changes = 0

    # -- plumbing ------------------------------------------------------------------------------

    def container(self, service: str, instance: str = INSTANCE) -> str:
        label = f"label=com.docker.swarm.service.name={PREFIX}-{instance}_{service}"
        found = docker_lines("ps", "-q", "--filter", label, "--filter", "status=running")
        if not found:
            raise RuntimeError(f"no running container of {instance}'s {service}")
        return found[0]

    def helper(self, script: str, *volumes: str, timeout: float = 900) -> str:
        """A short container from the backup image that runs a shell script with these volumes."""
        name = f"{HELPER}-{time.monotonic_ns() % 10**9}"
        mounts = [arg for volume in volumes for arg in ("-v", volume)]
        return docker("run", "--rm", "--name", name, "--label", LABEL, "--network", "none", *mounts,
                      "--entrypoint", "sh", HELPER_IMAGE, "-c", script, timeout=timeout).stdout

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.plane.data_dir / 'hafen.sqlite3'}?mode=ro", uri=True, timeout=30)

    def start_target(self) -> None:
        network = f"{PREFIX}-backup"
        if not docker_lines("network", "ls", "-q", "--filter", f"name=^{network}$"):
            docker("network", "create", "--driver", "overlay", "--attachable", "--label", LABEL, network)
        docker("run", "-d", "--name", TARGET, "--label", LABEL, "--network", network,
               "-v", f"{self.target_dir}:/data", TARGET_IMAGE)
        self.wait_target()

    def wait_target(self) -> None:
        def serving() -> bool:
            logs = docker("logs", TARGET, check=False)
            return "Serving restic" in logs.stdout + logs.stderr

        if not wait_until(serving, 30):
            raise RuntimeError("the backup target did not start serving")

    def wipe_repository(self) -> None:
        """An empty repository for a full backup: its directory goes, and rclone forgets its listings."""
        docker("stop", "-t", "5", TARGET)
        shutil.rmtree(self.target_dir / REPO_DIR, ignore_errors=True)
        if (self.target_dir / REPO_DIR).exists():
            raise RuntimeError("could not remove the repository's directory")
        docker("rm", TARGET)
        docker("run", "-d", "--name", TARGET, "--label", LABEL, "--network", f"{PREFIX}-backup",
               "-v", f"{self.target_dir}:/data", TARGET_IMAGE)
        self.wait_target()

    def repository_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.target_dir / REPO_DIR).rglob("*") if p.is_file())

    # -- the instance --------------------------------------------------------------------------

    def grow(self) -> dict[str, Any]:
        size = self.args.size_mb
        db_mb = max(1, round(size * DB_SHARE))
        motions = max(1, round(db_mb * 1024 / MOTION_KB))
        files = max(1, round((size - db_mb) / FILE_MB))
        log(f"{INSTANCE}: adding {motions} motions of ~{MOTION_KB} KiB (OpenSlides' models, web container)")
        seconds, _, out = timed(lambda: self.motions(motions, MOTION_KB, "grow"))
        log(f"{INSTANCE}: {out.strip()} motions in the database after {seconds:.1f}s")
        log(f"{INSTANCE}: writing {files} files of {FILE_MB} MiB of random bytes into {self.media_volume}")
        started = time.monotonic()
        self.helper(f"mkdir -p /m/generated && for i in $(seq 1 {files}); do "
                    f"head -c {FILE_MB * 1024 * 1024} /dev/urandom > /m/generated/file-$i.bin; done && sync",
                    f"{self.media_volume}:/m")
        log(f"{INSTANCE}: files written in {time.monotonic() - started:.1f}s")
        return {"motions": motions, "motion_kib": MOTION_KB, "files": files, "file_mib": FILE_MB,
                "motions_seconds": seconds, **self.sizes()}

    def motions(self, count: int, kb: int, tag: str) -> str:
        web = self.container("web")
        return subprocess.run(["docker", "exec", "-i", web, "python3", "-", str(count), str(kb), tag],
                              input=GROW, capture_output=True, text=True, timeout=1800, check=True).stdout

    def sizes(self) -> dict[str, Any]:
        db = self.container("db")
        query = "SELECT pg_database_size('openslides')"
        db_bytes = int(docker("exec", db, "psql", "-XAt", "-U", "openslides", "-d", "openslides", "-c", query
                              ).stdout.strip())
        media = self.helper("du -sb /m | cut -f1", f"{self.media_volume}:/m:ro")
        return {"database_bytes": db_bytes, "media_bytes": int(media.strip())}

    def small_change(self) -> None:
        self.changes += 1
        self.motions(1, 1, f"change{self.changes}")
        self.helper(f"head -c 102400 /dev/urandom > /m/generated/change-{self.changes}.bin",
                    f"{self.media_volume}:/m")

    # -- baseline ------------------------------------------------------------------------------

    def baseline_backup(self) -> dict[str, Any]:
        db = self.container("db")
        dump = self.base_dir / "db.sql"

        def pg_dump() -> None:
            with dump.open("wb") as out:
                subprocess.run(["docker", "exec", db, "pg_dump", "-U", "openslides", "--no-owner", "--no-privileges",
                                "openslides"], stdout=out, stderr=subprocess.PIPE, timeout=900, check=True)

        def tar() -> None:
            self.helper("tar -cf /out/media.tar -C /m .", f"{self.media_volume}:/m:ro", f"{self.base_dir}:/out")

        dump_s, dump_cpu, _ = timed(pg_dump)
        tar_s, tar_cpu, _ = timed(tar)
        return {"pg_dump_s": dump_s, "tar_s": tar_s, "seconds": round(dump_s + tar_s, 3),
                "cpu": {"pg_dump": dump_cpu, "tar": tar_cpu}, "dump_bytes": dump.stat().st_size,
                "tar_bytes": (self.base_dir / "media.tar").stat().st_size}

    def baseline_restore(self) -> dict[str, Any]:
        db = self.container("db")

        def psql() -> None:
            docker("exec", db, "dropdb", "-U", "openslides", "--if-exists", SCRATCH_DB)
            docker("exec", db, "createdb", "-U", "openslides", SCRATCH_DB)
            with (self.base_dir / "db.sql").open("rb") as dump:
                subprocess.run(["docker", "exec", "-i", db, "psql", "-X", "-q", "-U", "openslides", "-d", SCRATCH_DB,
                                "--single-transaction", "-v", "ON_ERROR_STOP=1", "-f", "-"], stdin=dump,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900, check=True)

        def untar() -> None:
            self.helper("rm -rf /out/restored && mkdir /out/restored && tar -xf /out/media.tar -C /out/restored",
                        f"{self.base_dir}:/out")

        try:
            psql_s, psql_cpu, _ = timed(psql)
            tar_s, tar_cpu, _ = timed(untar)
        finally:
            docker("exec", db, "dropdb", "-U", "openslides", "--if-exists", SCRATCH_DB, check=False)
            self.helper("rm -rf /out/restored /out/media.tar /out/db.sql", f"{self.base_dir}:/out")
        return {"psql_s": psql_s, "tar_x_s": tar_s, "seconds": round(psql_s + tar_s, 3),
                "cpu": {"psql": psql_cpu, "tar_x": tar_cpu}}

    # -- hafen ---------------------------------------------------------------------------------

    def backup(self) -> tuple[float, float | None, dict[str, Any]]:
        seconds, cpu, proc = timed(lambda: self.plane.hafen("backup", INSTANCE, "--json", "--timeout", str(OP_TIMEOUT),
                                                            timeout=OP_TIMEOUT + 60))
        return seconds, cpu, json.loads(proc.stdout)

    def verification(self, restic_id: str) -> dict[str, Any]:
        """Wait for the verification the controller queued after the backup; its times from its record."""
        def record() -> tuple[Any, ...] | None:
            with self.db() as conn:
                row = conn.execute(
                    "SELECT o.state, o.error, o.created_at, o.started_at, o.finished_at, s.verification "
                    "FROM instances_operation o JOIN instances_snapshot s "
                    "ON o.kind = 'verify' AND json_extract(o.params, '$.restore') = s.id "
                    "WHERE s.restic_id = ? ORDER BY o.id DESC LIMIT 1", (restic_id,)).fetchone()
            return tuple(row) if row else None

        cpu = CpuMeter()
        waited = time.monotonic()
        if not wait_until(lambda: (r := record()) is not None and r[4] is not None, VERIFY_TIMEOUT, 1.0):
            raise RuntimeError(f"the verification of {restic_id[:8]} did not finish in {VERIFY_TIMEOUT:.0f}s")
        state, error, created, started, finished, verification = record() or ()
        if state != "succeeded" or verification != "verified":
            raise RuntimeError(f"verification of {restic_id[:8]}: {state}, {verification}: {error}")

        def at(value: str) -> float:
            return datetime.fromisoformat(value).timestamp()

        return {"seconds": round(at(finished) - at(started), 3),
                "queued_to_done_s": round(at(finished) - at(created), 3),
                "waited_s": round(time.monotonic() - waited, 3), "cpu": cpu.share()}

    def restore(self, snapshot: str, new: str) -> tuple[float, float | None]:
        try:
            seconds, cpu, _ = timed(lambda: self.plane.hafen("restore", INSTANCE, snapshot, "--into", new, "--yes",
                                                             "--json", "--timeout", str(OP_TIMEOUT),
                                                             timeout=OP_TIMEOUT + 60))
        finally:
            erase_s, error = self.plane.erase(new)
            if error:
                self.problems.append(f"{new}: erase: {error}")
        return seconds, cpu

    # -- one run -------------------------------------------------------------------------------

    def run(self, n: int) -> dict[str, Any]:
        result: dict[str, Any] = {"run": n, "machine_at_start": machine()}
        log(f"run {n}: baseline: pg_dump + tar -c")
        result["baseline_backup"] = self.baseline_backup()
        log(f"run {n}: baseline backup {result['baseline_backup']['seconds']:.2f}s "
            f"(pg_dump {result['baseline_backup']['pg_dump_s']:.2f}s, tar {result['baseline_backup']['tar_s']:.2f}s)")
        result["baseline_restore"] = self.baseline_restore()
        log(f"run {n}: baseline restore {result['baseline_restore']['seconds']:.2f}s "
            f"(psql {result['baseline_restore']['psql_s']:.2f}s, tar -x {result['baseline_restore']['tar_x_s']:.2f}s)")

        self.wipe_repository()
        log(f"run {n}: full backup into an empty repository")
        timeline = Timeline(self.plane.data_dir / "hafen.sqlite3")
        seconds, cpu, snap = self.backup()
        result["full"] = {"seconds": seconds, "cpu": cpu, "id": snap["id"], "size": snap["size"],
                          "added": snap["added"], "repository_bytes": self.repository_bytes()}
        log(f"run {n}: full backup {seconds:.2f}s ({snap['size']} B read, {snap['added']} B added, CPU {cpu})")
        result["verify_full"] = self.verification(snap["restic_id"])
        result["timeline_full"] = timeline.finish()
        log(f"run {n}: its verification {result['verify_full']['seconds']:.2f}s")

        self.small_change()
        log(f"run {n}: incremental backup after one motion and one 100 KiB file")
        timeline = Timeline(self.plane.data_dir / "hafen.sqlite3")
        seconds, cpu, snap = self.backup()
        result["incremental"] = {"seconds": seconds, "cpu": cpu, "id": snap["id"], "size": snap["size"],
                                 "added": snap["added"]}
        log(f"run {n}: incremental backup {seconds:.2f}s ({snap['added']} B added)")
        result["verify_incremental"] = self.verification(snap["restic_id"])
        result["timeline_incremental"] = timeline.finish()
        log(f"run {n}: its verification {result['verify_incremental']['seconds']:.2f}s")

        new = f"{INSTANCE}-r{n}"
        log(f"run {n}: restore {snap['id']} into {new}")
        timeline = Timeline(self.plane.data_dir / "hafen.sqlite3")
        seconds, cpu = self.restore(snap["id"], new)
        result["timeline_restore"] = timeline.finish()
        result["restore"] = {"seconds": seconds, "cpu": cpu, "into": new}
        log(f"run {n}: restore into a new instance {seconds:.2f}s")
        return result

    def body(self) -> None:
        report = self.report
        try:
            self.plane.up(report)
            self.plane.hafen("backup-policy", "--disable", timeout=60)
            self.start_target()
            log(f"{INSTANCE}: hafen create --app openslides")
            seconds, _, _ = timed(lambda: self.plane.create(INSTANCE, "openslides"))
            report["create_seconds"] = seconds
            report["instance"] = self.grow()
            log(f"{INSTANCE}: database {report['instance']['database_bytes'] / 2**20:.1f} MiB, "
                f"media {report['instance']['media_bytes'] / 2**20:.1f} MiB")
            for n in range(1, self.args.runs + 1):
                run: dict[str, Any] = {"run": n}
                try:
                    run = self.run(n)
                except Exception as exc:
                    run["error"] = str(exc)
                    self.problems.append(f"run {n}: {exc}")
                    log(f"run {n}: {exc}")
                report["runs"].append(run)
            report["machine_at_end"] = machine()
            busy = [r["run"] for r in report["runs"] if r.get("machine_at_start", {}).get("pytest_processes")]
            if busy:
                report["notes"].append(f"other test runs (pytest) were running at the start of run(s) {busy}")
            self.summarise()
        finally:
            self.plane.down(report)
            for folder in (self.target_dir, self.base_dir):
                shutil.rmtree(folder, ignore_errors=True)

    def summarise(self) -> None:
        report, runs = self.report, [r for r in self.report["runs"] if "error" not in r]

        def figure(key: str) -> dict[str, Any] | None:
            return stats([r[key]["seconds"] for r in runs])

        figures = {key: figure(key) for key in ("baseline_backup", "baseline_restore", "full", "incremental",
                                                 "restore", "verify_full", "verify_incremental")}
        report["figures"] = figures
        report["ratios"] = {
            "full_to_baseline_backup": ratio(figures["full"], figures["baseline_backup"]),
            "incremental_to_baseline_backup": ratio(figures["incremental"], figures["baseline_backup"]),
            "incremental_to_full": ratio(figures["incremental"], figures["full"]),
            "restore_to_baseline_restore": ratio(figures["restore"], figures["baseline_restore"]),
            "verify_to_baseline_restore": ratio(figures["verify_full"], figures["baseline_restore"]),
        }
        full, incremental, restore = figures["full"], figures["incremental"], figures["restore"]
        share = round(incremental["median"] / full["median"], 3) if full and incremental else None
        report["goals"] = {
            "full_backup_s": {"goal": GOALS["full_backup_s"], "median": full and full["median"],
                              "met": bool(full and full["median"] <= GOALS["full_backup_s"])},
            "restore_s": {"goal": GOALS["restore_s"], "median": restore and restore["median"],
                          "met": bool(restore and restore["median"] <= GOALS["restore_s"])},
            "incremental_share_of_full": {"goal": GOALS["incremental_share_of_full"], "median": share,
                                          "met": share is not None and share <= GOALS["incremental_share_of_full"]},
        }
        report["cpu_share_median"] = {
            key: stats([r[key]["cpu"] for r in runs if r[key].get("cpu") is not None])
            for key in ("full", "incremental", "restore", "verify_full")
        }


def summary(report: dict[str, Any]) -> str:
    size = report.get("instance") or {}
    lines = [f"Backups of one OpenSlides instance: database {size.get('database_bytes', 0) / 2**20:.0f} MiB, "
             f"media {size.get('media_bytes', 0) / 2**20:.0f} MiB; {len(report['runs'])} run(s) (seconds)"]
    figures, ratios = report.get("figures") or {}, report.get("ratios") or {}
    shown = [("full backup", "full", ratios.get("full_to_baseline_backup"), "backup"),
             ("incremental backup", "incremental", ratios.get("incremental_to_baseline_backup"), "backup"),
             ("restore --into NEW", "restore", ratios.get("restore_to_baseline_restore"), "restore"),
             ("verification (sandbox)", "verify_full", ratios.get("verify_to_baseline_restore"), "restore"),
             ("verification, incremental", "verify_incremental", None, ""),
             ("baseline: pg_dump + tar -c", "baseline_backup", None, ""),
             ("baseline: psql + tar -x", "baseline_restore", None, "")]
    rows = []
    for title, key, against, base in shown:
        data = figures.get(key) or {}
        runs = ", ".join(fmt(r[key]["seconds"]) for r in report["runs"] if key in r)
        cpu = (report.get("cpu_share_median") or {}).get(key) or {}
        rows.append([title, runs, *(fmt(data.get(k)) for k in ("median", "min", "max")),
                     f"{fmt(against, 1)} ({base})" if against is not None else "-",
                     f"{100 * cpu['median']:.0f} %" if cpu else "-"])
    lines += table(["", "runs", "median", "min", "max", "x baseline", "CPU"], rows, [26, 24, 7, 7, 7, 16, 6],
                   left=2)
    if ratios.get("incremental_to_full") is not None:
        lines.append(f"incremental / full: {ratios['incremental_to_full']:.2f}")
    for key, goal in (report.get("goals") or {}).items():
        verdict = "no figure" if goal["median"] is None else "met" if goal["met"] else "MISSED"
        lines.append(f"goal {key} <= {goal['goal']}: median {goal['median']} -> {verdict}")
    lines.append("CPU: share of both cores busy during the step (whole machine)")
    for title, items in (("Notes", report["notes"]), ("Problems", report["problems"])):
        if items:
            lines += ["", f"{title}:", *(f"  - {item}" for item in items)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=1000, help="size of the instance (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 20 <= args.size_mb <= 20000:
        parser.error("--size-mb must be between 20 and 20000")
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be between 1 and 20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT, extra_names=(HELPER,))
    plane.preflight()
    report = new_report("backup", size_mb=args.size_mb, runs=args.runs, prefix=PREFIX, http_port=HTTP_PORT,
                        web_port=WEB_PORT, repository=REPOSITORY, target_image=TARGET_IMAGE,
                        db_share=DB_SHARE, goals=GOALS)
    report.update(runs=[], figures={})
    bench = Bench(args, plane, report)
    report["notes"].append("full backups go into an emptied repository: each includes `restic init`")
    return conclude(report, bench.body, summary)


if __name__ == "__main__":
    sys.exit(main())
