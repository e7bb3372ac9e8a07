"""Benchmark: updates of an instance (`hafen update NAME --version V`): a rolling update under steady load,
an OpenSlides 3.2 -> 3.3 migration, and a rollback.

Each run, per app (--app demo|openslides|both), on instances of the benchmark's own:

1. Rolling update under steady load (demo and OpenSlides): the app's image of the version the instance
   runs is rebuilt (`docker build --label ... -t TAG -` from `FROM <its id>`: the same content, a new
   id) and, once `hafen show` offers the new build, a load generator on loopback (--threads threads, each
   its own keep-alive connection, a fixed total rate, skipping the slots of a thread more than 1 s behind)
   sends `GET` of the app's health/version path (demo: /health at --demo-rate 40/s; OpenSlides:
   /apps/core/version/ at --openslides-rate 12/s: about half of what one web task serves on this
   2-core machine, demo about 80/s, OpenSlides about 20/s; at those rates the latency is queueing)
   through the edge with the instance's Host header: 3 s of warm-up, a baseline window
   (--demo-window 60 s, --openslides-window 170 s: at least 2,000 requests each), then
   `hafen update NAME --version SAME --json` (the "rolling" plan: a candidate task of the new build
   checked on the instance's network, then the web service rolls over start-first) while the load goes
   on until a window of the same length has passed since the update began (longer if the update takes
   longer: then until 3 s after it ended). Figures: failed requests (a non-2xx answer or an error, 10 s
   timeout; goal 0) and when they fell, p50 and p99 latency in the update window and while the command
   ran, against the baseline window of the same run (ratios), and the update's duration. The tag is put
   back on the original image in a `finally` block (and from a record in /var/tmp at the next start if
   the benchmark was killed); the rebuilt image is removed once its instance is erased.
2. OpenSlides 3.2 -> 3.3 (the "migrating" plan): an instance created on 3.2 with a motion added through
   OpenSlides' REST API, then `hafen update NAME --version 3.3 --json`: its total time (the command's wall
   time, and the operation's from its record), the backup step's and the migration step's time (from the
   steps' started_at/finished_at in the JSON), and how long the edge served the "updating" page: a poller
   asks every 0.2 s (one request at a time) and counts the 503 answers that say "being updated": the
   page's time is from the first to the last of them (their count x 0.2 s is kept too, and the time each
   answer took); any other answer that is not a 200 is listed (a 404 or 502 as the edge switches, a
   timeout). The motion must survive. The rolling update of 1. then runs on the same instance (now on
   3.3); the instance is erased at the end of the run.
3. A rollback (demo): 1.0 -> 2.1 (the tests' catalogue, HAFEN_CATALOG_EXTRA=tests/catalog: its migration
   fails half-way), timed until the `hafen update` ends "rolled back" (exit status non-zero); the
   instance must run 1.0 with its note and file. The rolling update of 1. then runs on the same instance.

Figures: medians (min, max) over the runs via common.stats; a ratio is each run's own (update window
against the baseline window of the same run), the median of those shown.

Everything runs under the prefix "bup" on the ports 35080/35443 (edge) and 35765 (control-plane web;
38080/38443/38765 are bench.provision's), with a fresh temporary data directory and the default backup
repository inside it; all objects it makes carry the label hafen.prefix=bup and are removed at the end,
also after errors, Ctrl-C or SIGTERM.

    .venv/bin/python -m bench.update [--runs 3] [--app demo|openslides|both] [--openslides-runs N]
                                     [--threads 8] [--demo-rate 40] [--demo-window 60]
                                     [--openslides-rate 12] [--openslides-window 170]
    .venv/bin/python -m bench.update --runs 1 --app demo        # a quick check

Results: bench/results/update-<UTC timestamp>.json and update-latest.json.
Exit status: 0 if every step worked and nothing was left over (failed requests during a rolling update
are a finding, shown against their goal, not a problem of the benchmark); 1 on a problem; 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    REPO,
    BenchPlane,
    conclude,
    docker,
    fmt,
    log,
    new_report,
    percentile,
    stats,
    table,
)

PREFIX = "bup"
HTTP_PORT = 35080
HTTPS_PORT = 35443
WEB_PORT = 35765
CATALOG_EXTRA = REPO / "tests" / "catalog"
RETAG_RECORD = Path(f"/var/tmp/hafen-{PREFIX}-retag.json")  # tags to put back if a run was killed

OP_TIMEOUT = 600.0
BUILD_TIMEOUT = 300.0
OFFER_TIMEOUT = 90.0
WARMUP = 3.0
TAIL = 3.0
POLL = 0.2
REQUEST_TIMEOUT = 10.0
MIN_REQUESTS = 2000

APPS: dict[str, dict[str, Any]] = {
    "demo": {"version": "1.0", "path": "/health", "tag": "hafen/demo:1.0"},
    "openslides": {"version": "3.3", "from": "3.2", "path": "/apps/core/version/", "tag": "hafen/openslides:3.3"},
}
IMAGES = ["hafen/demo:1.0", "hafen/demo:2.1", "hafen/openslides:3.2", "hafen/openslides:3.3"]
GOALS = {"failed_requests_rolling": 0}


def machine() -> dict[str, Any]:
    """The load average and other test runs at this moment (the figures mean little on a busy machine)."""
    others = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True).stdout.split()
    return {"load": [round(v, 2) for v in os.getloadavg()], "pytest_processes": len(others)}


def at(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def image_id(tag: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


def ok(status: int) -> bool:
    return 200 <= status < 300


def edge(domain: str, timeout: float = 15.0) -> httpx.Client:
    # Python's resolver does not map *.localhost to loopback as browsers and curl do.
    return httpx.Client(base_url=f"http://127.0.0.1:{HTTP_PORT}", headers={"Host": domain}, timeout=timeout)


# -- the apps' own APIs -------------------------------------------------------------------------------

def demo_login(domain: str, password: str) -> httpx.Client:
    client = edge(domain)
    response = client.post("/login", json={"username": "admin", "password": password})
    if response.status_code != 200:
        raise RuntimeError(f"demo login: HTTP {response.status_code}")
    return client


def demo_data(domain: str, password: str) -> dict[str, Any]:
    """The version, notes and file of a demo instance, read with a new login."""
    with closing(demo_login(domain, password)) as client:
        return _demo_data(client)


def _demo_data(client: httpx.Client) -> dict[str, Any]:
    notes = client.get("/notes")
    agenda = client.get("/files/agenda.txt")
    return {"version": client.get("/health").json().get("version"),
            "notes": [n["body"] for n in notes.json()] if notes.status_code == 200 else f"HTTP {notes.status_code}",
            "file": agenda.text if agenda.status_code == 200 else f"HTTP {agenda.status_code}"}


def openslides_login(domain: str, password: str) -> httpx.Client:
    """Logged in as admin; OpenSlides sets its CSRF cookie at the login (as tests/openslides.py does)."""
    client = edge(domain, timeout=30)
    response = client.post("/apps/users/login/", json={"username": "admin", "password": password})
    if response.status_code != 200:
        raise RuntimeError(f"OpenSlides login: HTTP {response.status_code}: {response.text[:200]}")
    if token := client.cookies.get("OpenSlidesCsrfToken"):
        client.headers["X-CSRFToken"] = token
    return client


def openslides_version(client: httpx.Client) -> str:
    return str(client.get("/apps/core/version/").json().get("openslides_version", ""))


def add_motion(client: httpx.Client, title: str) -> None:
    created = client.post("/rest/motions/motion/", json={"title": title, "text": "<p>hafen</p>", "workflow_id": 1})
    if created.status_code != 201:
        raise RuntimeError(f"adding a motion: HTTP {created.status_code}: {created.text[:200]}")


def motion_titles(client: httpx.Client) -> list[str]:
    response = client.get("/rest/motions/motion/")
    if response.status_code != 200:
        raise RuntimeError(f"listing motions: HTTP {response.status_code}")
    return sorted(m["title"] for m in response.json())


# -- load --------------------------------------------------------------------------------------------

@dataclass
class Sample:
    sent: float  # time.monotonic() when sent
    seconds: float
    status: int  # 0: no answer (an error)
    note: str  # for a failure: the error's type, or the start of the body


class Load:
    """GETs of one path through the edge at a fixed total rate from a few threads, each on its own keep-alive
    connection. A thread that falls more than a second behind its schedule skips the missed slots (counted)
    rather than firing them all at once."""

    def __init__(self, domain: str, path: str, rate: float, threads: int) -> None:
        self.domain, self.path, self.rate, self.threads = domain, path, rate, threads
        self.stop_event = threading.Event()
        self.samples: list[list[Sample]] = [[] for _ in range(threads)]
        self.skipped = [0] * threads
        self.workers = [threading.Thread(target=self.work, args=(i,), daemon=True) for i in range(threads)]
        self.started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        for worker in self.workers:
            worker.start()

    def work(self, index: int) -> None:
        interval = self.threads / self.rate
        first = self.started + index * interval / self.threads  # the threads staggered
        samples, k = self.samples[index], 0
        with edge(self.domain, timeout=REQUEST_TIMEOUT) as client:
            while not self.stop_event.is_set():
                due = first + k * interval
                now = time.monotonic()
                if now - due > 1.0:
                    missed = int((now - due) / interval)
                    k += missed
                    self.skipped[index] += missed
                    due = first + k * interval
                if due > now and self.stop_event.wait(due - now):
                    break
                sent = time.monotonic()
                try:
                    response = client.get(self.path)
                    status = response.status_code
                    note = "" if ok(status) else response.text[:80].replace("\n", " ")
                except httpx.HTTPError as exc:
                    status, note = 0, type(exc).__name__
                samples.append(Sample(sent, time.monotonic() - sent, status, note))
                k += 1

    def stop(self) -> list[Sample]:
        self.stop_event.set()
        for worker in self.workers:
            worker.join(REQUEST_TIMEOUT + 5)
        return sorted((s for part in self.samples for s in part), key=lambda s: s.sent)


def window(samples: list[Sample], start: float, end: float, origin: float) -> dict[str, Any]:
    """What the requests sent in [start, end) got; failures' times in seconds from `origin`."""
    inside = [s for s in samples if start <= s.sent < end]
    latencies = [s.seconds for s in inside if ok(s.status)]
    failed = [s for s in inside if not ok(s.status)]

    def ms(share: float) -> float | None:
        value = percentile(latencies, share)
        return None if value is None else round(value * 1000, 2)

    return {
        "seconds": round(end - start, 2), "requests": len(inside), "rate": round(len(inside) / (end - start), 1),
        "failed": len(failed), "p50_ms": ms(0.5), "p99_ms": ms(0.99),
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "statuses": dict(Counter(str(s.status) for s in inside)),
        "failures": [{"at_s": round(s.sent - origin, 2), "status": s.status, "note": s.note} for s in failed[:50]],
    }


class Poller:
    """Asks the instance's domain every 0.2 s during an update: what people and API clients get. A poll
    does not wait for the one before: each goes to one of a few workers (each its own keep-alive
    connection), so that one request that hangs does not blind the poller; a poll that finds every
    worker busy waits for one (its time is the time it was sent)."""

    WORKERS = 6

    def __init__(self, domain: str, path: str) -> None:
        self.domain, self.path = domain, path
        self.stop_event = threading.Event()
        self.slots: queue.Queue[float | None] = queue.Queue()
        self.lock = threading.Lock()
        # time sent, status, Retry-After, the updating page?, note, seconds to the answer
        self.seen: list[tuple[float, int, str, bool, str, float]] = []
        self.threads = [threading.Thread(target=self.tick, daemon=True),
                        *(threading.Thread(target=self.work, daemon=True) for _ in range(self.WORKERS))]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def tick(self) -> None:
        while not self.stop_event.wait(POLL):
            self.slots.put(time.monotonic())
        for _ in range(self.WORKERS):
            self.slots.put(None)

    def work(self) -> None:
        with edge(self.domain, timeout=REQUEST_TIMEOUT) as client:
            while self.slots.get() is not None:
                now = time.monotonic()
                try:
                    response = client.get(self.path)
                except httpx.HTTPError as exc:
                    seen = (now, 0, "", False, type(exc).__name__, time.monotonic() - now)
                else:
                    text = response.text
                    seen = (now, response.status_code, response.headers.get("retry-after", ""),
                            response.status_code == 503 and "being updated" in text,
                            "" if response.status_code == 200 else text[:80].replace("\n", " "),
                            time.monotonic() - now)
                with self.lock:
                    self.seen.append(seen)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT + 5)
        self.seen.sort()

    def finish(self, origin: float) -> dict[str, Any]:
        self.stop()
        page = [s for s in self.seen if s[3]]
        others = [s for s in self.seen if s[1] != 200 and not s[3]]
        runs: list[list[Any]] = []  # the sequence of answers, consecutive equal ones merged
        for s in self.seen:
            key = "updating page" if s[3] else str(s[1])
            if runs and runs[-1][0] == key:
                runs[-1][1] += 1
            else:
                runs.append([key, 1, round(s[0] - origin, 2)])
        return {
            "polls": len(self.seen),
            "page_answers": len(page),
            "page_seconds": round(page[-1][0] - page[0][0] + POLL, 2) if page else 0.0,
            "page_seconds_by_count": round(len(page) * POLL, 2),
            "page_retry_after": sorted({s[2] for s in page}),
            "page_answer_ms": stats([s[5] for s in page], 1000, 1),
            "ok_answer_ms": stats([s[5] for s in self.seen if s[1] == 200], 1000, 1),
            "first_page_at_s": round(page[0][0] - origin, 2) if page else None,
            "other_failures": len(others),
            "other_statuses": dict(Counter(str(s[1]) for s in others)),
            "other_examples": [{"at_s": round(s[0] - origin, 2), "status": s[1], "note": s[4],
                                "answer_s": round(s[5], 2)} for s in others[:20]],
            "sequence": runs,  # [answer, how many in a row, first at (s from the update's start)]
        }


# -- the benchmark -----------------------------------------------------------------------------------

def step_seconds(op: dict[str, Any]) -> dict[str, float]:
    """Each step's seconds, from its record."""
    found = {}
    for step in op.get("steps") or []:
        started, finished = at(step.get("started_at")), at(step.get("finished_at"))
        if started is not None and finished is not None:
            found[step["name"]] = round(finished - started, 3)
    return found


def span(op: dict[str, Any], first: str, last: str) -> float | None:
    steps = {s["name"]: s for s in op.get("steps") or []}
    started = at((steps.get(first) or {}).get("started_at"))
    finished = at((steps.get(last) or {}).get("finished_at"))
    return round(finished - started, 3) if started is not None and finished is not None else None


def op_seconds(op: dict[str, Any]) -> float | None:
    created, finished = at(op.get("created_at")), at(op.get("finished_at"))
    return round(finished - created, 3) if created is not None and finished is not None else None


class Bench:
    def __init__(self, args: argparse.Namespace, plane: BenchPlane, report: dict[str, Any]) -> None:
        self.args, self.plane, self.report = args, plane, report
        self.problems: list[str] = report["problems"]
        self.rebuilt: list[str] = []  # image ids to remove once their instances are gone

    # -- plumbing --------------------------------------------------------------------------------

    def hafen_json(self, *args: str, timeout: float = 120) -> Any:
        return json.loads(self.plane.hafen(*args, "--json", timeout=timeout).stdout)

    def update(self, name: str, version: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.monotonic()
        proc = self.plane.hafen("update", name, "--version", version, "--json", "--timeout", str(OP_TIMEOUT),
                                timeout=OP_TIMEOUT + 60, check=False)
        return round(time.monotonic() - started, 3), proc

    def latest_update(self, name: str) -> dict[str, Any]:
        ops = self.hafen_json("show", name)["operations"]
        return next((op for op in ops if op["kind"] == "update"), {})

    def rebuild(self, tag: str, label: str) -> tuple[str, str]:
        """A new build of `tag` with the same content (a label more): (old id, new id). The old id is recorded
        in RETAG_RECORD first, so that a killed benchmark puts it back at its next start."""
        old = image_id(tag)
        record = json.loads(RETAG_RECORD.read_text()) if RETAG_RECORD.exists() else {}
        record[tag] = old
        RETAG_RECORD.write_text(json.dumps(record))
        try:
            proc = subprocess.run(["docker", "build", "-q", "--label", f"hafen.bench-rebuild={label}", "-t", tag, "-"],
                                  input=f"FROM {old}\n", capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"docker build of {tag} did not finish in {BUILD_TIMEOUT:.0f}s") from exc
        new = image_id(tag)
        if proc.returncode != 0 or new == old:
            raise RuntimeError(f"rebuilding {tag}: exit {proc.returncode}, id {'unchanged' if new == old else new}: "
                               f"{proc.stderr.strip()[-300:]}")
        self.rebuilt.append(new)
        return old, new

    @staticmethod
    def put_back(tag: str, old: str) -> None:
        docker("tag", old, tag)
        record = json.loads(RETAG_RECORD.read_text()) if RETAG_RECORD.exists() else {}
        record.pop(tag, None)
        if record:
            RETAG_RECORD.write_text(json.dumps(record))
        else:
            RETAG_RECORD.unlink(missing_ok=True)
        log(f"{tag} is back on {old[:19]}")

    def remove_rebuilt(self) -> None:
        for image in list(self.rebuilt):
            if docker("image", "rm", image, check=False).returncode == 0:
                self.rebuilt.remove(image)

    def erase(self, name: str) -> None:
        _, error = self.plane.erase(name)
        if error:
            self.problems.append(f"{name}: erase: {error}")
        self.remove_rebuilt()

    # -- 1. a rolling update under load ------------------------------------------------------------

    def rolling(self, app: str, name: str, domain: str, n: int) -> dict[str, Any]:
        spec, args = APPS[app], self.args
        log(f"{name}: rebuilding {spec['tag']} (same content, new id)")
        old, new = self.rebuild(spec["tag"], f"{self.report['stamp']}-{app}-{n}")
        result: dict[str, Any] = {"image_before": old, "image_rebuilt": new}
        try:
            # the offer comes from the image ids the controller records on its passes: a few seconds
            rebuilt_at = time.monotonic()
            offered: dict[str, Any] = {}
            while not offered.get("rebuilt"):
                if time.monotonic() - rebuilt_at > OFFER_TIMEOUT:
                    raise RuntimeError(f"{name} is not offered the new build after {OFFER_TIMEOUT:.0f}s: {offered}")
                time.sleep(1.0)
                offered = self.hafen_json("show", name)["update"]
            result["offered_after_s"] = round(time.monotonic() - rebuilt_at, 2)
            rate, length = getattr(args, f"{app}_rate"), getattr(args, f"{app}_window")
            load = Load(domain, spec["path"], rate, args.threads)
            log(f"{name}: load {rate:g} req/s from {args.threads} threads: {WARMUP:g} s warm-up, "
                f"{length:g} s baseline, then `hafen update {name} --version {spec['version']}`")
            load.start()
            try:
                time.sleep(WARMUP)
                base_start = time.monotonic()
                time.sleep(length)
                update_start = time.monotonic()
                seconds, proc = self.update(name, spec["version"])
                update_end = time.monotonic()
                window_end = max(update_start + length, update_end + TAIL)
                time.sleep(max(0.0, window_end - time.monotonic()))
            finally:
                samples = load.stop()
        finally:
            self.put_back(spec["tag"], old)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise RuntimeError(f"the rolling update exited {proc.returncode}: {lines[-1] if lines else ''}")
        op = json.loads(proc.stdout)
        plan = (op.get("update") or {}).get("plan")
        if op["state"] != "succeeded" or plan != "rolling":
            raise RuntimeError(f"the update of {name}: {op['state']}, plan {plan}: {op.get('error')}")
        web = docker("service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
                     f"{PREFIX}-{name}_web").stdout.strip()
        baseline = window(samples, base_start, base_start + length, update_start)
        during = window(samples, update_start, window_end, update_start)
        proper = window(samples, update_start, update_end, update_start)
        result.update(
            seconds=seconds, operation_seconds=op_seconds(op), steps=step_seconds(op),
            web_runs_rebuilt=new in web, baseline=baseline, update=during, update_proper=proper,
            skipped_slots=sum(load.skipped),
            failed=during["failed"],
            p99_ratio=round(during["p99_ms"] / baseline["p99_ms"], 2)
            if during["p99_ms"] and baseline["p99_ms"] else None,
            p50_ratio=round(during["p50_ms"] / baseline["p50_ms"], 2)
            if during["p50_ms"] and baseline["p50_ms"] else None,
            proper_p99_ratio=round(proper["p99_ms"] / baseline["p99_ms"], 2)
            if proper["p99_ms"] and baseline["p99_ms"] else None,
        )
        if not result["web_runs_rebuilt"]:
            self.problems.append(f"{name}: the web service does not run the rebuilt image after the update ({web})")
        if result["skipped_slots"]:
            self.report["notes"].append(f"{name}, run {n}: the load fell more than 1 s behind and skipped "
                                        f"{result['skipped_slots']} requests: the app did not keep up with the rate")
        if during["seconds"] > baseline["seconds"] + 0.5:
            self.report["notes"].append(f"{name}, run {n}: the update took longer than --window: its window "
                                        f"{during['seconds']} s against a baseline of {baseline['seconds']} s")
        for kind, data in (("baseline", baseline), ("update", during)):
            if data["requests"] < MIN_REQUESTS:
                self.report["notes"].append(f"{name}, run {n}: only {data['requests']} requests in the {kind} window "
                                            f"(fewer than {MIN_REQUESTS}: raise --rate or --window)")
        log(f"{name}: rolling update {seconds:.1f}s; {during['failed']} of {during['requests']} requests failed "
            f"({during['statuses']}); p50 {fmt(baseline['p50_ms'], 1)} -> {fmt(during['p50_ms'], 1)} ms, "
            f"p99 {fmt(baseline['p99_ms'], 1)} -> {fmt(during['p99_ms'], 1)} ms")
        return result

    # -- 2. OpenSlides 3.2 -> 3.3 -------------------------------------------------------------------

    def migrate(self, name: str, domain: str, password: str, n: int) -> dict[str, Any]:
        spec = APPS["openslides"]
        title = f"Made on {spec['from']} (run {n})"
        with closing(openslides_login(domain, password)) as client:
            if not openslides_version(client).startswith(spec["from"]):
                raise RuntimeError(f"{name} does not run OpenSlides {spec['from']}")
            add_motion(client, title)
        log(f"{name}: hafen update {name} --version {spec['version']} (migrating), polling every {POLL:g} s")
        poller = Poller(domain, spec["path"])
        poller.start()
        started = time.monotonic()
        try:
            seconds, proc = self.update(name, spec["version"])
        finally:
            polled = poller.finish(started)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise RuntimeError(f"the update to {spec['version']} exited {proc.returncode}: "
                               f"{lines[-1] if lines else ''}")
        op = json.loads(proc.stdout)
        plan = (op.get("update") or {}).get("plan")
        if op["state"] != "succeeded" or plan != "migrating":
            raise RuntimeError(f"the update of {name}: {op['state']}, plan {plan}: {op.get('error')}")
        migration = next((s["name"] for s in op["steps"] if s["title"].startswith("migrate the database")), None)
        with closing(openslides_login(domain, password)) as client:
            found = openslides_version(client)
            titles = motion_titles(client)
        result = {
            "seconds": seconds, "operation_seconds": op_seconds(op),
            "backup_s": span(op, "backup", "backup"), "backup_with_cleanup_s": span(op, "backup", "backup-cleanup"),
            "migration_step": migration,
            "migration_s": span(op, migration, migration.replace("deploy:", "wait:", 1)) if migration else None,
            "steps": step_seconds(op), "edge": polled, "page_s": polled["page_seconds"],
            "version_after": found, "motions_after": titles, "motion_survived": title in titles,
        }
        if not found.startswith(spec["version"]):
            self.problems.append(f"{name}: runs {found} after the update, not {spec['version']}")
        if title not in titles:
            self.problems.append(f"{name}: the motion {title!r} did not survive the update: {titles}")
        log(f"{name}: {spec['from']} -> {spec['version']} in {seconds:.1f}s (backup {fmt(result['backup_s'])}s, "
            f"migration {fmt(result['migration_s'])}s); updating page {polled['page_seconds']:.1f}s; other answers "
            f"{polled['other_statuses'] or 'none'}; motion {'kept' if title in titles else 'LOST'}")
        return result

    # -- 3. a rollback -----------------------------------------------------------------------------

    def rollback(self, name: str, domain: str, password: str, before: dict[str, Any]) -> dict[str, Any]:
        log(f"{name}: hafen update {name} --version 2.1 (its migration fails: a rollback)")
        seconds, proc = self.update(name, "2.1")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        error = lines[-1] if lines else ""
        op = self.latest_update(name)
        failed = next((s for s in op.get("steps") or [] if s["state"] == "failed"), None)
        first = at(next((s["started_at"] for s in op.get("steps") or [] if s.get("started_at")), None))
        failed_at = at(failed["finished_at"]) if failed else None
        finished = at(op.get("finished_at"))
        shown = self.hafen_json("show", name)
        after = demo_data(domain, password)
        result: dict[str, Any] = {
            "seconds": seconds, "exit_status": proc.returncode, "error": error, "state": op.get("state"),
            "operation_seconds": op_seconds(op), "failed_step": failed["name"] if failed else None,
            "failed_after_s": round(failed_at - first, 3) if failed_at and first else None,
            "rollback_s": round(finished - failed_at, 3) if finished and failed_at else None,
            "steps": step_seconds(op), "instance": {"state": shown["state"], "version": shown["version"]},
            "data_before": before, "data_after": after, "data_intact": after == before,
        }
        if proc.returncode == 0 or "rolled back" not in error or op.get("state") != "rolled back":
            self.problems.append(f"{name}: the update to 2.1 did not end rolled back: exit {proc.returncode}, "
                                 f"{op.get('state')}: {error}")
        if shown["state"] != "running" or shown["version"] != "1.0":
            self.problems.append(f"{name}: after the rollback it is {shown['state']} on {shown['version']}")
        if after != before:
            self.problems.append(f"{name}: data after the rollback {after}, before {before}")
        log(f"{name}: rolled back in {seconds:.1f}s (exit {proc.returncode}; failed at {result['failed_step']} "
            f"after {fmt(result['failed_after_s'])}s, rollback {fmt(result['rollback_s'])}s); data "
            f"{'intact' if after == before else 'CHANGED'}")
        return result

    # -- runs --------------------------------------------------------------------------------------

    def run_demo(self, n: int) -> dict[str, Any]:
        name = f"demo{n}"
        result: dict[str, Any] = {"run": n, "app": "demo", "machine_at_start": machine()}
        try:
            log(f"{name}: hafen create --app demo")
            started = time.monotonic()
            data = self.plane.create(name, "demo")
            result["create_s"] = round(time.monotonic() - started, 3)
            domain, password = data["domain"], data["password"]
            with closing(demo_login(domain, password)) as client:
                if client.post("/notes", json={"body": f"before (run {n})"}).status_code != 201:
                    raise RuntimeError("could not add a note")
                if client.put("/files/agenda.txt", content=b"agenda v1").status_code != 201:
                    raise RuntimeError("could not upload a file")
                before = _demo_data(client)
            result["rollback"] = self.rollback(name, domain, password, before)
            result["rolling"] = self.rolling("demo", name, domain, n)
            after = demo_data(domain, password)
            result["rolling"]["data_intact"] = after == before
            if after != before:
                self.problems.append(f"{name}: data after the rolling update {after}, before {before}")
        except Exception as exc:
            result["error"] = str(exc)
            self.problems.append(f"demo run {n}: {exc}")
            log(f"demo run {n}: {exc}")
        finally:
            self.erase(name)
        return result

    def run_openslides(self, n: int) -> dict[str, Any]:
        name = f"os{n}"
        spec = APPS["openslides"]
        result: dict[str, Any] = {"run": n, "app": "openslides", "machine_at_start": machine()}
        try:
            log(f"{name}: hafen create --app openslides --version {spec['from']}")
            started = time.monotonic()
            data = self.hafen_json("create", name, "--app", "openslides", "--version", spec["from"], timeout=900)
            result["create_s"] = round(time.monotonic() - started, 3)
            result["migrate"] = self.migrate(name, data["domain"], data["password"], n)
            result["rolling"] = self.rolling("openslides", name, data["domain"], n)
            with closing(openslides_login(data["domain"], data["password"])) as client:
                titles = motion_titles(client)
            result["rolling"]["data_intact"] = titles == result["migrate"]["motions_after"]
            if not result["rolling"]["data_intact"]:
                self.problems.append(f"{name}: motions after the rolling update {titles}")
        except Exception as exc:
            result["error"] = str(exc)
            self.problems.append(f"openslides run {n}: {exc}")
            log(f"openslides run {n}: {exc}")
        finally:
            self.erase(name)
        return result

    def body(self) -> None:
        report, args = self.report, self.args
        try:
            self.plane.up(report)
            self.plane.hafen("backup-policy", "--disable", timeout=60)  # only the updates' own backups
            for n in range(1, args.runs + 1):
                if args.app in ("demo", "both"):
                    report["runs"].append(self.run_demo(n))
                if args.app in ("openslides", "both") and n <= args.openslides_runs:
                    report["runs"].append(self.run_openslides(n))
            report["machine_at_end"] = machine()
            busy = [f"{r['app']} {r['run']}" for r in report["runs"]
                    if r.get("machine_at_start", {}).get("pytest_processes")]
            if busy:
                report["notes"].append(f"other test runs (pytest) were running at the start of run(s) {busy}")
            self.summarise()
        finally:
            self.plane.down(report)
            self.remove_rebuilt()
            if self.rebuilt:
                self.problems.append(f"clean-up: rebuilt images left: {self.rebuilt}")

    def summarise(self) -> None:
        report = self.report
        runs = report["runs"]

        def of(app: str, part: str) -> list[dict[str, Any]]:
            return [r[part] for r in runs if r["app"] == app and part in r]

        figures: dict[str, Any] = {}
        for app in ("demo", "openslides"):
            rolled = of(app, "rolling")
            if rolled:
                figures[f"{app}_rolling"] = {
                    "update_s": stats([r["seconds"] for r in rolled]),
                    "failed_requests": stats([r["failed"] for r in rolled], digits=0),
                    "failed_total": sum(r["failed"] for r in rolled),
                    "failed_baseline_total": sum(r["baseline"]["failed"] for r in rolled),
                    "requests_update_window": stats([r["update"]["requests"] for r in rolled], digits=0),
                    "requests_baseline_window": stats([r["baseline"]["requests"] for r in rolled], digits=0),
                    "baseline_p50_ms": stats([r["baseline"]["p50_ms"] for r in rolled if r["baseline"]["p50_ms"]]),
                    "update_p50_ms": stats([r["update"]["p50_ms"] for r in rolled if r["update"]["p50_ms"]]),
                    "baseline_p99_ms": stats([r["baseline"]["p99_ms"] for r in rolled if r["baseline"]["p99_ms"]]),
                    "update_p99_ms": stats([r["update"]["p99_ms"] for r in rolled if r["update"]["p99_ms"]]),
                    "update_proper_p99_ms": stats([r["update_proper"]["p99_ms"] for r in rolled
                                                   if r["update_proper"]["p99_ms"]]),
                    "p99_ratio": stats([r["p99_ratio"] for r in rolled if r["p99_ratio"]], digits=2),
                    "proper_p99_ratio": stats([r["proper_p99_ratio"] for r in rolled if r["proper_p99_ratio"]],
                                              digits=2),
                    "p50_ratio": stats([r["p50_ratio"] for r in rolled if r["p50_ratio"]], digits=2),
                }
        migrated = of("openslides", "migrate")
        if migrated:
            figures["openslides_migrate"] = {
                key: stats([r[key] for r in migrated if r.get(key) is not None])
                for key in ("seconds", "operation_seconds", "backup_s", "migration_s", "page_s")
            }
            figures["openslides_migrate"]["motion_survived"] = all(r["motion_survived"] for r in migrated)
            figures["openslides_migrate"]["other_failures_total"] = sum(r["edge"]["other_failures"] for r in migrated)
            figures["openslides_migrate"]["other_statuses"] = dict(sum(
                (Counter(r["edge"]["other_statuses"]) for r in migrated), Counter()))
            figures["openslides_migrate"]["page_answer_ms"] = stats(
                [r["edge"]["page_answer_ms"]["median"] for r in migrated if r["edge"]["page_answer_ms"]], digits=1)
        rolled_back = of("demo", "rollback")
        if rolled_back:
            figures["demo_rollback"] = {
                key: stats([r[key] for r in rolled_back if r.get(key) is not None])
                for key in ("seconds", "operation_seconds", "failed_after_s", "rollback_s")
            }
            figures["demo_rollback"]["data_intact"] = all(r["data_intact"] for r in rolled_back)
        report["figures"] = figures
        report["goals"] = {
            f"{app}_failed_requests_rolling": {
                "goal": GOALS["failed_requests_rolling"], "total": figures[f"{app}_rolling"]["failed_total"],
                "met": figures[f"{app}_rolling"]["failed_total"] <= GOALS["failed_requests_rolling"]}
            for app in ("demo", "openslides") if f"{app}_rolling" in figures
        }


def summary(report: dict[str, Any]) -> str:
    config, figures = report["config"], report.get("figures") or {}
    lines = [f"Updates (hafen update): {config['runs']} run(s), app {config['app']}; load from {config['threads']} "
             f"threads: demo {config['demo_rate']:g} req/s, windows of {config['demo_window']:g} s; OpenSlides "
             f"{config['openslides_rate']:g} req/s, windows of {config['openslides_window']:g} s"]

    def runs_of(app: str, part: str, key: str, digits: int = 2) -> str:
        values = [r[part].get(key) for r in report["runs"] if r["app"] == app and part in r]
        return ", ".join(fmt(v, digits) if isinstance(v, float) else str(v) for v in values)

    def med(data: dict[str, Any] | None, digits: int = 2) -> list[str]:
        data = data or {}
        return [fmt(data.get("median"), digits), fmt(data.get("min"), digits), fmt(data.get("max"), digits)]

    rows = []
    for app in ("demo", "openslides"):
        f = figures.get(f"{app}_rolling")
        if not f:
            continue
        rows += [
            [f"{app} rolling: update (s)", runs_of(app, "rolling", "seconds"), *med(f["update_s"])],
            [f"{app} rolling: failed requests", runs_of(app, "rolling", "failed"), *med(f["failed_requests"], 0)],
            [f"{app} rolling: p50 baseline (ms)", "", *med(f["baseline_p50_ms"], 1)],
            [f"{app} rolling: p50 update (ms)", "", *med(f["update_p50_ms"], 1)],
            [f"{app} rolling: p99 baseline (ms)", "", *med(f["baseline_p99_ms"], 1)],
            [f"{app} rolling: p99 update (ms)", "", *med(f["update_p99_ms"], 1)],
            [f"{app} rolling: p99 update/baseline", runs_of(app, "rolling", "p99_ratio"), *med(f["p99_ratio"])],
            [f"{app} rolling: p99 during the command (ms)", "", *med(f["update_proper_p99_ms"], 1)],
            [f"{app} rolling: ... / baseline", runs_of(app, "rolling", "proper_p99_ratio"),
             *med(f["proper_p99_ratio"])],
        ]
    if f := figures.get("openslides_migrate"):
        rows += [
            ["openslides 3.2->3.3: total (s)", runs_of("openslides", "migrate", "seconds"), *med(f["seconds"])],
            ["openslides 3.2->3.3: backup (s)", runs_of("openslides", "migrate", "backup_s"), *med(f["backup_s"])],
            ["openslides 3.2->3.3: migration (s)", runs_of("openslides", "migrate", "migration_s"),
             *med(f["migration_s"])],
            ["openslides 3.2->3.3: page shown (s)", runs_of("openslides", "migrate", "page_s"), *med(f["page_s"])],
        ]
    if f := figures.get("demo_rollback"):
        rows += [
            ["demo 1.0->2.1 rollback: total (s)", runs_of("demo", "rollback", "seconds"), *med(f["seconds"])],
            ["demo rollback: failure after (s)", runs_of("demo", "rollback", "failed_after_s"),
             *med(f["failed_after_s"])],
            ["demo rollback: rollback part (s)", runs_of("demo", "rollback", "rollback_s"), *med(f["rollback_s"])],
        ]
    lines += table(["", "runs", "median", "min", "max"], rows, [48, 28, 8, 8, 8], left=2)
    if f := figures.get("openslides_migrate"):
        lines.append(f"OpenSlides 3.2->3.3: motion survived every update: {f['motion_survived']}; answers other than "
                     f"200 and the updating page: {f['other_failures_total']} {f['other_statuses'] or ''} "
                     f"(status 0: no answer in {REQUEST_TIMEOUT:g} s or an error); an updating page took "
                     f"{fmt((f['page_answer_ms'] or {}).get('median'), 0)} ms to come (median of the runs' medians)")
    if f := figures.get("demo_rollback"):
        lines.append(f"demo: notes and file intact after every rollback: {f['data_intact']}")
    for key, goal in (report.get("goals") or {}).items():
        verdict = "met" if goal["met"] else "MISSED"
        lines.append(f"goal {key} = {goal['goal']}: {goal['total']} in all runs -> {verdict}")
    for app in ("demo", "openslides"):
        if f := figures.get(f"{app}_rolling"):
            lines.append(f"{app}: failed requests in the baseline windows: {f['failed_baseline_total']}")
    for title, items in (("Notes", report["notes"]), ("Problems", report["problems"])):
        if items:
            lines += ["", f"{title}:", *(f"  - {item}" for item in items)]
    return "\n".join(lines)


def put_back_recorded(report: dict[str, Any]) -> None:
    """Tags a killed run left on a rebuilt image go back to their original image."""
    if not RETAG_RECORD.exists():
        return
    for tag, old in json.loads(RETAG_RECORD.read_text()).items():
        Bench.put_back(tag, old)
        report["notes"].append(f"{tag} was put back on {old} (left on a rebuilt image by an earlier run)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs (default: %(default)s)")
    parser.add_argument("--app", choices=("demo", "openslides", "both"), default="both",
                        help="which app (default: %(default)s)")
    parser.add_argument("--openslides-runs", type=int, default=None,
                        help="runs with OpenSlides, the first ones (default: --runs)")
    parser.add_argument("--demo-rate", type=float, default=40.0,
                        help="requests per second of the load on a demo instance (default: 40)")
    parser.add_argument("--openslides-rate", type=float, default=12.0,
                        help="requests per second of the load on an OpenSlides instance (default: 12)")
    parser.add_argument("--threads", type=int, default=8, help="threads of the load (default: %(default)s)")
    parser.add_argument("--demo-window", type=float, default=60.0,
                        help="seconds of the baseline window, and the least of the update window, on a demo "
                             "instance (default: 60)")
    parser.add_argument("--openslides-window", type=float, default=170.0,
                        help="the same on an OpenSlides instance (default: 170)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be between 1 and 20")
    if args.openslides_runs is None:
        args.openslides_runs = args.runs
    if not 1 <= args.openslides_runs <= args.runs:
        parser.error("--openslides-runs must be between 1 and --runs")
    rates, windows = (args.demo_rate, args.openslides_rate), (args.demo_window, args.openslides_window)
    if not 1 <= args.threads <= 32 or not all(1 <= r <= 1000 for r in rates) or not all(5 <= w <= 600 for w in windows):
        parser.error("--threads 1-32, --*-rate 1-1000, --*-window 5-600")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT)
    plane.env["HAFEN_CATALOG_EXTRA"] = str(CATALOG_EXTRA)  # demo 2.1, whose migration fails
    plane.preflight()
    report = new_report("update", runs=args.runs, app=args.app, openslides_runs=args.openslides_runs,
                        threads=args.threads, demo_rate=args.demo_rate, demo_window=args.demo_window,
                        openslides_rate=args.openslides_rate, openslides_window=args.openslides_window,
                        warmup=WARMUP, tail=TAIL, request_timeout=REQUEST_TIMEOUT,
                        poll=POLL, prefix=PREFIX, http_port=HTTP_PORT, web_port=WEB_PORT,
                        catalog_extra=str(CATALOG_EXTRA), goals=GOALS)
    report.update(runs=[], figures={})
    put_back_recorded(report)
    missing = [tag for tag in IMAGES if docker("image", "inspect", tag, check=False).returncode != 0]
    if missing:
        raise SystemExit(f"images missing (build them first): {', '.join(missing)}")
    report["images"] = {tag: image_id(tag) for tag in IMAGES}
    bench = Bench(args, plane, report)
    for app in ("demo", "openslides"):
        if getattr(args, f"{app}_rate") * getattr(args, f"{app}_window") < MIN_REQUESTS:
            report["notes"].append(f"--{app}-rate x --{app}-window gives fewer than {MIN_REQUESTS} requests per window")
    return conclude(report, bench.body, summary)


if __name__ == "__main__":
    sys.exit(main())
