"""Benchmark: central logs: the pipeline's ingest rate and its CPU, the delay from a line written in a
container to it being found by search, search time over millions of lines, the collector at rest.

Two parts, each optional:

* store (no Docker): `--lines` (default 10 million) generated lines inserted into a SQLite FTS5 store
  (the embedded default) in batches, then each search `--repeat` times (the median is reported);
* pipeline: a control plane of its own (prefix "benchl", ports 39280/39643/39965, log port 39614), its
  collector at rest for `--rest` seconds; the delay of `--samples` lines, each written into a container and
  searched through the API until found; then an emitter writes lines at rising rates (`--rates`, each for
  `--seconds`): how many arrive, and the CPU of the collector, dockerd (whose syslog driver sends them)
  and the controller (which ingests them) per 1000 lines/s.

    .venv/bin/python -m bench.logs [--lines 10000000] [--skip-store] [--skip-pipeline]

Results: bench/results/logs-<UTC timestamp>.json and logs-latest.json.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.common import BenchPlane, conclude, docker, docker_lines, fmt, log, new_report, stats, wait_until

PREFIX = "benchl"
HTTP_PORT, HTTPS_PORT, WEB_PORT, LOG_PORT = 39280, 39643, 39965, 39614
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_TEXT = (
    "GET POST PUT /apps/core/version/ /apps/users/login/ /ws/ motion agenda speaker election projector user login "
    "logout websocket connected closed 200 201 302 404 500 INFO WARNING ERROR daphne worker http access request "
    "took ms bytes client server cache redis postgres")
WORDS = tuple(word for word in _TEXT.split(" ") if word)


# -- the store --------------------------------------------------------------------------------------


def generated(count: int, start: float) -> Iterator[tuple[Any, str]]:
    from hafen.logs.parse import Line

    rng = random.Random(7)
    instances = [f"event{i:03d}" for i in range(200)]
    services = ("web", "web", "web", "worker", "db", "redis")
    levels = ("info",) * 90 + ("warning",) * 7 + ("error",) * 3
    for i in range(count):
        instance = instances[i % 200]
        words = " ".join(rng.choices(WORDS, k=8))
        yield (Line(start + i * 0.001, PREFIX, instance, services[i % 6], f"{i % 997:012x}", rng.choice(levels),
                    f"{words} id={i} req-{rng.getrandbits(32):08x}"), f"org{i % 20}")


def bench_store(report: dict[str, Any], lines: int, repeat: int) -> None:
    from hafen.logs.store import Query, SqliteStore, insert_many

    directory = Path(tempfile.mkdtemp(prefix="hafen-benchl-store-"))
    try:
        store = SqliteStore(directory / "logs.sqlite3")
        start = time.time() - lines * 0.001
        log(f"store: inserting {lines:,} lines")
        began, cpu = time.perf_counter(), time.process_time()
        insert_many(store, generated(lines, start), batch=20000)
        elapsed = time.perf_counter() - began
        size = sum(p.stat().st_size for p in directory.iterdir())
        result: dict[str, Any] = {
            "lines": lines, "insert_seconds": round(elapsed, 1), "insert_lines_per_s": round(lines / elapsed),
            "insert_cpu_seconds": round(time.process_time() - cpu, 1), "bytes": size,
            "bytes_per_line": round(size / lines, 1), "searches": {},
        }
        log(f"store: {lines / elapsed:,.0f} lines/s, {size / 2**30:.2f} GiB")
        middle = start + lines * 0.0005
        searches = {
            "rare word (one id)": Query(text=f"id {lines // 2}"),
            "common word, newest 100": Query(text="websocket"),
            "two words in order": Query(text="redis postgres"),
            "instance + level error": Query(instance="event042", level="error"),
            "word + instance": Query(text="projector", instance="event042"),
            "word + org + 1 h window": Query(text="login", orgs=frozenset({"org3"}), since=middle, until=middle + 3600),
            "customer, no words": Query(orgs=frozenset({"org7"})),
            "no match": Query(text="nosuchwordanywhere"),
        }
        for name, query in searches.items():
            times, found = [], 0
            for _ in range(repeat):
                t0 = time.perf_counter()
                found = len(store.search(query))
                times.append(time.perf_counter() - t0)
            result["searches"][name] = {"found": found, **(stats(times, 1000) or {})}
            log(f"store: {name}: {statistics.median(times) * 1000:.1f} ms ({found} found)")
        report["store"] = result
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- the pipeline -----------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """CPU seconds a process has used (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def container_cpu(container: str) -> float:
    for path in (Path(f"/sys/fs/cgroup/cpuacct/docker/{container}/cpuacct.usage"),
                 Path(f"/sys/fs/cgroup/system.slice/docker-{container}.scope/cpu.stat")):
        if path.exists():
            text = path.read_text()
            return int(text) / 1e9 if path.name == "cpuacct.usage" else int(text.split()[1]) / 1e6
    return 0.0


def collector(prefix: str) -> str:
    ids = docker_lines("ps", "-q", "--no-trunc", "--filter", f"label=com.docker.swarm.service.name={prefix}-logs")
    return ids[0] if ids else ""


def dockerd_pid() -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "dockerd":
                    return int(proc.name)
            except OSError:
                continue
    raise RuntimeError("no dockerd")


EMITTER = r"""
import sys, time
rate, seconds, run = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
out = sys.stdout
sent, start = 0, time.monotonic()
while True:
    now = time.monotonic() - start
    if now >= seconds:
        break
    due = int(now * rate) + 1
    while sent < due:
        sent += 1
        out.write(f"{run} line {sent} GET /apps/core/version/ 200 took 3 ms\n")
    out.flush()
    time.sleep(0.005)
print(f"{run} sent {sent}", flush=True)
time.sleep(3600)
"""


def bench_pipeline(report: dict[str, Any], plane: BenchPlane, rates: list[int], seconds: float, samples: int,
                   rest: float) -> None:
    plane.up(report)
    wait_until(lambda: bool(collector(PREFIX)), 120, 1)
    container = collector(PREFIX)
    token = plane.hafen("user", "token", "admin", "--name", "bench", "--scope", "read").stdout.strip()
    api = httpx.Client(base_url=f"http://127.0.0.1:{WEB_PORT}/api/v1", headers={"Authorization": f"Bearer {token}"},
                       timeout=10)
    db = sqlite3.connect(plane.data_dir / "logs.sqlite3", timeout=30)
    controller = int((plane.data_dir / "controller.pid").read_text().strip())
    dockerd = dockerd_pid()

    # the collector at rest
    time.sleep(5)
    c0, t0 = container_cpu(container), time.monotonic()
    time.sleep(rest)
    memory = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", container).stdout.split("/")[0].strip()
    report["collector_at_rest"] = {"cpu_percent": round((container_cpu(container) - c0) / (time.monotonic() - t0)
                                                        * 100, 3), "memory": memory, "seconds": rest}
    log(f"collector at rest: {report['collector_at_rest']}")

    # an emitter tagged as a hafen service, with the driver the installation gives its services
    tag = f"{PREFIX}.emit.bench/{{{{.ID}}}}"
    name = f"{PREFIX}-emit"

    def emitter(*command: str) -> str:
        docker("service", "rm", name, check=False)
        wait_until(lambda: not docker_lines("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}"),
                   60, 0.5)
        docker("service", "create", "-d", "--name", name, "--label", f"hafen.prefix={PREFIX}", "--init",
               "--restart-condition", "none", "--no-resolve-image", "--log-driver", "syslog",
               "--log-opt", f"syslog-address=udp://127.0.0.1:{LOG_PORT}", "--log-opt", "syslog-format=rfc5424micro",
               "--log-opt", f"tag={tag}", "hafen/demo:1.0", *command)
        found: list[str] = []
        wait_until(lambda: bool(found.extend(docker_lines("ps", "-q", "--filter",
                                                          f"label=com.docker.swarm.service.name={name}")) or found),
                   60, 0.5)
        return found[0]

    # delay: a line written in a container, found by the API's search
    box = emitter("sleep", "3600")
    delays = []
    for _ in range(samples):
        marker = f"benchmark{uuid.uuid4().hex[:16]}"
        began = time.monotonic()
        docker("exec", box, "sh", "-c", f"echo {marker} > /proc/1/fd/1")
        if not wait_until(lambda m=marker: bool(api.get("/logs", params={"q": m}).json()["lines"]), 30, 0.05):
            report["problems"].append(f"line {marker} not found in 30 s")
            continue
        delays.append(time.monotonic() - began)
        time.sleep(0.5)
    report["delay_seconds"] = stats(delays)
    log(f"delay written to found: {report['delay_seconds']}")

    # ingest rate: rising rates until lines are lost
    report["rates"] = []
    for rate in rates:
        run = f"r{uuid.uuid4().hex[:10]}"
        cpu0 = (container_cpu(container), proc_cpu(dockerd), proc_cpu(controller))
        began = time.monotonic()
        emitter("python3", "-c", EMITTER, str(rate), str(seconds), run)
        expected = int(rate * seconds)

        def arrived(r: str = run) -> int:
            return int(db.execute("SELECT count(*) FROM lines_fts WHERE lines_fts MATCH ?", (f'"{r}"',)).fetchone()[0])

        wait_until(lambda e=expected: arrived() >= e, seconds + 60, 1)
        last, settled = -1, arrived()
        while settled != last:  # until nothing more comes
            last = settled
            time.sleep(3)
            settled = arrived()
        span = time.monotonic() - began
        cpu1 = (container_cpu(container), proc_cpu(dockerd), proc_cpu(controller))
        row = {"rate": rate, "seconds": seconds, "sent": expected, "arrived": settled,
               "lost_percent": round(100 * (1 - settled / expected), 2),
               "cpu_seconds": {k: round(b - a, 2) for k, a, b in zip(("collector", "dockerd", "controller"), cpu0,
                                                                     cpu1, strict=True)},
               "span_seconds": round(span, 1)}
        row["cpu_percent_per_1000_lines_s"] = round(sum(row["cpu_seconds"].values()) / seconds * 100
                                                    / (rate / 1000), 2)
        report["rates"].append(row)
        log(f"rate {rate}/s: {row}")
    docker("service", "rm", name, check=False)


def summary(report: dict[str, Any]) -> str:
    out = ["", "central logs"]
    store = report.get("store")
    if store:
        out.append(f"  store: {store['lines']:,} lines inserted at {store['insert_lines_per_s']:,} lines/s, "
                   f"{store['bytes_per_line']} bytes a line")
        for name, figures in store["searches"].items():
            out.append(f"    {name:32s} {fmt(figures.get('median'), 1):>8} ms  ({figures['found']} found)")
    if report.get("delay_seconds"):
        out.append(f"  written to found: median {fmt(report['delay_seconds']['median'])} s")
    for row in report.get("rates", []):
        out.append(f"  {row['rate']:>6} lines/s: {row['lost_percent']}% lost; CPU s {row['cpu_seconds']}")
    if report.get("collector_at_rest"):
        out.append(f"  collector at rest: {report['collector_at_rest']}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rates", default="1000,3000,6000,10000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--rest", type=float, default=30)
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    report = new_report("logs", **vars(args))
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT)
    plane.env["HAFEN_LOG_PORT"] = str(LOG_PORT)
    if not args.skip_pipeline:
        plane.preflight()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

    def body() -> None:
        if not args.skip_store:
            bench_store(report, args.lines, args.repeat)
        if not args.skip_pipeline:
            try:
                bench_pipeline(report, plane, [int(r) for r in args.rates.split(",")], args.seconds, args.samples,
                               args.rest)
            finally:
                plane.hafen("down", check=False, timeout=120)
                plane.sweep(report["problems"])

    return conclude(report, body, summary)


if __name__ == "__main__":
    raise SystemExit(main())
