"""Benchmark: what metrics and alerts cost, and how fast they answer.

A control plane of the benchmark's own (prefix "bmt", ports 33080/33443/33765, so Prometheus on 33775 ...),
with the shipped scrape and evaluation intervals (15 s) unless --scrape says otherwise:

1. at rest with 0 instances, then with --count demo instances: the CPU (% of one core, from the cgroups,
   over --seconds) and the memory (docker stats) of Prometheus, Alertmanager and the node exporters,
   and the CPU of the control plane's process (its exporter is a thread of it);
2. each scrape job's duration (Prometheus's own scrape_duration_seconds, max over the targets) and the
   number of series Prometheus keeps;
3. a chart query's time through hafen's API (GET /api/v1/instances/NAME/metrics?range=1h|1d, all five
   charts, median of --repeat) and the fleet view's (GET /api/v1/fleet);
4. the time from a failure (the instance's database scaled to 0, so the web's health check fails) to the
   alert mail at a real SMTP server (aiosmtpd) with --alert-for as every rule's `for:` (the shipped
   InstanceDown waits 2m on top).

    .venv/bin/python -m bench.metrics [--count 20] [--seconds 60] [--repeat 5]

Results: bench/results/metrics-<UTC timestamp>.json and metrics-latest.json. Not part of CI.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from email import message_from_bytes
from typing import Any

import httpx

from bench.common import BenchPlane, conclude, docker, docker_lines, log, new_report, to_mib, wait_until
from bench.idle import container_seconds, create_many, process_seconds, processes

PREFIX = "bmt"
HTTP_PORT, HTTPS_PORT, WEB_PORT = 33080, 33443, 33765
PROMETHEUS = f"http://127.0.0.1:{WEB_PORT + 10}"
SERVICES = ("prometheus", "alertmanager", "node-metrics")


def metrics_containers(plane: BenchPlane) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for service in SERVICES:
        found[service] = docker_lines("ps", "-q", "--no-trunc", "--filter",
                                      f"label=com.docker.swarm.service.name={PREFIX}-{service}")
    return found


def at_rest(plane: BenchPlane, seconds: float) -> dict[str, Any]:
    containers = metrics_containers(plane)
    pids = processes(plane)
    before = {s: container_seconds(ids) for s, ids in containers.items()}
    procs0 = process_seconds(pids)
    started = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    after = {s: container_seconds(ids) for s, ids in containers.items()}
    procs1 = process_seconds(pids)
    memory = {}
    for service, ids in containers.items():
        if ids:
            out = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", *ids).stdout.split("\n")
            memory[service] = round(sum(to_mib(line.split("/")[0]) for line in out if line.strip()), 1)
    cpu = {s: round(100 * (after[s] - before[s]) / wall, 2) for s in containers}
    cpu["control plane (its exporter among it)"] = round(100 * (procs1.get("controller", 0)
                                                             - procs0.get("controller", 0)) / wall, 2)
    return {"seconds": round(wall, 1), "cpu_percent_of_a_core": cpu, "memory_mib": memory,
            "total_cpu_percent": round(sum(v for k, v in cpu.items() if k in SERVICES), 2),
            "total_memory_mib": round(sum(memory.values()), 1)}


def prom(expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=30)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def scrapes() -> dict[str, Any]:
    durations = {r["metric"]["job"]: round(float(r["value"][1]) * 1000, 1)
                 for r in prom("max by (job) (scrape_duration_seconds)")}
    samples = {r["metric"]["job"]: int(float(r["value"][1])) for r in prom("sum by (job) (scrape_samples_scraped)")}
    head = prom("prometheus_tsdb_head_series")
    return {"scrape_ms_max_by_job": durations, "samples_by_job": samples,
            "series": int(float(head[0]["value"][1])) if head else None}


def timed(client: httpx.Client, path: str, repeat: int) -> dict[str, Any]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return {"median_ms": round(statistics.median(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1)}


class Mailbox:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[float, str]] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                outer.messages.append((time.time(), str(message_from_bytes(envelope.content)["Subject"])))
                return "250 OK"

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def first(self, *words: str) -> float | None:
        return next((t for t, subject in list(self.messages) if all(w in subject for w in words)), None)


def run_benchmark(args: argparse.Namespace, plane: BenchPlane, report: dict[str, Any], box: Mailbox) -> None:
    plane.up(report)
    plane.hafen("backup-policy", "--disable", timeout=60)
    plane.hafen("org", "create", "bench", timeout=60)
    plane.hafen("org", "add-member", "bench", "benchadmin", "--role", "admin", "--email", "admin@bench.test",
                timeout=60)
    if not wait_until(lambda: _ready(), 180):
        raise RuntimeError("Prometheus did not answer")
    log(f"Prometheus ready; at rest with 0 instances for {args.seconds:.0f}s after {args.settle:.0f}s")
    time.sleep(args.settle)
    report["rest_0"] = at_rest(plane, args.seconds)
    log(f"0 instances: {report['rest_0']}")
    names = [f"bm{i:03d}" for i in range(args.count)]
    # the first belongs to the organisation, whose admin the alert mail goes to (the operator has no address)
    plane.hafen("create", names[0], "--app", "demo", "--org", "bench", "--json")
    report["instances"] = 1 + len(create_many(plane, "demo", names[1:], args.parallel, report["problems"]))
    log(f"{report['instances']} instances; settling {args.settle:.0f}s")
    time.sleep(args.settle)
    report[f"rest_{args.count}"] = at_rest(plane, args.seconds)
    log(f"{args.count} instances: {report[f'rest_{args.count}']}")
    report["scrapes"] = scrapes()
    token = plane.hafen("user", "token", "admin", "--name", "bench", "--scope", "read", timeout=60).stdout.strip()
    with httpx.Client(base_url=f"http://127.0.0.1:{WEB_PORT}/api/v1", timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        report["chart_query"] = {r: timed(client, f"/instances/{names[0]}/metrics?range={r}", args.repeat)
                                 for r in ("1h", "1d")}
        report["fleet_query"] = timed(client, "/fleet", args.repeat)
    log(f"chart {report['chart_query']}, fleet {report['fleet_query']}")
    # failure to mail: the database of one instance scaled to 0
    db = f"{PREFIX}-{names[0]}_db"
    failed = time.time()
    docker("service", "scale", "-d", f"{db}=0")
    try:
        wait_until(lambda: box.first("FIRING", "InstanceDown", names[0]) is not None, 600)
    finally:
        docker("service", "scale", "-d", f"{db}=1")
    fired = box.first("FIRING", "InstanceDown", names[0])
    report["failure_to_mail_s"] = round(fired - failed, 1) if fired else None
    wait_until(lambda: box.first("RESOLVED", "InstanceDown", names[0]) is not None, 600)
    resolved = box.first("RESOLVED", "InstanceDown", names[0])
    report["recovery_to_resolved_mail_s"] = round(resolved - fired, 1) if resolved and fired else None
    log(f"failure to mail {report['failure_to_mail_s']}s")


def _ready() -> bool:
    try:
        return httpx.get(f"{PROMETHEUS}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def summary(report: dict[str, Any]) -> str:
    lines = ["metrics and alerts"]
    for key in [k for k in report if k.startswith("rest_")]:
        rest = report[key]
        lines.append(f"  at rest, {key[5:]} instances: {rest['total_cpu_percent']} % of a core, "
                     f"{rest['total_memory_mib']} MiB ({rest['cpu_percent_of_a_core']}, {rest['memory_mib']})")
    if "scrapes" in report:
        lines.append(f"  scrape ms (max by job): {report['scrapes']['scrape_ms_max_by_job']}; "
                     f"series {report['scrapes']['series']}")
    if "chart_query" in report:
        lines.append(f"  chart query (API, five charts): {report['chart_query']}; fleet {report['fleet_query']}")
    if "failure_to_mail_s" in report:
        lines.append(f"  failure to alert mail: {report['failure_to_mail_s']} s (for: {report['config']['alert_for']})"
                     f"; back to resolved mail {report.get('recovery_to_resolved_mail_s')} s")
    lines += [f"  problem: {p}" for p in report["problems"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=45.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scrape", default="15s")
    parser.add_argument("--alert-for", default="10s")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    box = Mailbox()
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT)
    plane.env.update(HAFEN_SMTP_URL=f"smtp://127.0.0.1:{box.port}?tls=none", HAFEN_SCRAPE_INTERVAL=args.scrape,
                     HAFEN_EVALUATION_INTERVAL=args.scrape, HAFEN_ALERT_FOR=args.alert_for,
                     HAFEN_ALERT_GROUP_WAIT="1s", HAFEN_ALERT_GROUP_INTERVAL="5s", HAFEN_IDLE="never")
    plane.preflight()
    report = new_report("metrics", count=args.count, seconds=args.seconds, scrape=args.scrape,
                        alert_for=args.alert_for)

    def body() -> None:
        try:
            run_benchmark(args, plane, report, box)
        finally:
            plane.down(report)
            box.controller.stop()

    return conclude(report, body, summary)


if __name__ == "__main__":
    threading.excepthook = lambda exc: None  # aiosmtpd's thread on shutdown
    sys.exit(main())
