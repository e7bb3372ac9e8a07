"""Benchmark: do writes through the REST API wait for (or fail on) a busy controller?

SQLite has one writer at a time. A controller that holds the write lock across
Docker calls makes the UI's and the API's writes wait, then fail with
"database is locked". This runs the same 300 API writes from 3 clients twice in
one invocation: once with the controller idle, once while 5 demo creates run;
each write is one request (lock + unlock of one instance, token create +
revoke), timed from request to answer.

A real control plane runs under the prefix "benchw" on the ports 48080/48443
(edge) and 48765 (web), with a fresh temporary data directory; everything it
makes is removed at the end, also after errors or Ctrl-C.

    .venv/bin/python -m bench.api_writes [--writes 300] [--clients 3] [--creates 5] [--hafen-root DIR]

--hafen-root runs the hafen package found in DIR (e.g. an export of an older
commit) instead of this checkout's, to compare before and after a change.

Results: bench/results/api_writes-<UTC timestamp>.json and api_writes-latest.json.
Exit status 0 when no write failed and everything was cleaned up, else 1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO, BenchPlane, conclude, log, new_report, percentile

PREFIX = "benchw"
HTTP_PORT, HTTPS_PORT, WEB_PORT = 48080, 48443, 48765
LOCKED = "bwlock"
REQUEST_TIMEOUT = 60.0


def client_writes(api: httpx.Client, client_no: int, pairs: int, samples: list[float], failures: list[str]) -> None:
    """`pairs` pairs of writes: lock + unlock, then token create + revoke, alternately."""

    def call(method: str, path: str, expect: int, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            response = api.request(method, path, json=body)
        except httpx.HTTPError as exc:
            failures.append(f"{method} {path}: {exc!r}")
            return None
        samples.append(time.perf_counter() - started)
        if response.status_code != expect:
            failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            return None
        return response.json() if response.content else {}

    for n in range(pairs):
        if n % 2 == 0:
            made = call("POST", f"/instances/{LOCKED}/locks", 201,
                        {"actions": ["erase"], "reason": f"bench client {client_no}"})
            if made:
                call("DELETE", f"/instances/{LOCKED}/locks/{made['id']}", 204)
        else:
            made = call("POST", "/tokens", 201, {"name": f"bench-{client_no}-{n}", "scope": "read"})
            if made:
                call("DELETE", f"/tokens/{made['id']}", 204)


def write_phase(token: str, writes: int, clients: int) -> dict[str, Any]:
    samples: list[float] = []
    failures: list[str] = []
    pairs = writes // 2 // clients
    apis = [httpx.Client(base_url=f"http://127.0.0.1:{WEB_PORT}/api/v1", timeout=REQUEST_TIMEOUT,
                         headers={"Authorization": f"Bearer {token}"}) for _ in range(clients)]
    threads = [threading.Thread(target=client_writes, args=(api, n, pairs, samples, failures))
               for n, api in enumerate(apis)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for api in apis:
        api.close()
    rounded = [round(v, 4) if v is not None else None for v in (percentile(samples, 0.5), percentile(samples, 0.99))]
    return {
        "writes": pairs * 2 * clients, "answered": len(samples), "failures": len(failures),
        "failure_examples": failures[:5], "seconds": round(time.monotonic() - started, 2),
        "p50": rounded[0], "p99": rounded[1], "max": round(max(samples), 4) if samples else None,
    }


def run_benchmark(args: argparse.Namespace, plane: BenchPlane, report: dict[str, Any]) -> None:
    plane.up(report)
    token = plane.hafen("user", "token", "admin", "--name", "bench", "--scope", "write").stdout.strip()
    log(f"creating {LOCKED}")
    plane.create(LOCKED, "demo")

    log(f"idle: {args.writes} writes from {args.clients} clients")
    report["idle"] = write_phase(token, args.writes, args.clients)
    log(f"idle: {report['idle']}")

    names = [f"bwc{n}" for n in range(1, args.creates + 1)]
    creates: dict[str, str] = {}

    def create(name: str) -> None:
        try:
            plane.create(name, "demo")
            creates[name] = "ok"
        except Exception as exc:
            creates[name] = str(exc)

    threads = [threading.Thread(target=create, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    time.sleep(args.head_start)  # the creates have been committed and the controller works on them
    log(f"busy ({args.creates} creates): {args.writes} writes from {args.clients} clients")
    report["busy"] = write_phase(token, args.writes, args.clients)
    report["busy"]["creates_still_running_at_end"] = sum(thread.is_alive() for thread in threads)
    log(f"busy: {report['busy']}")
    for thread in threads:
        thread.join()
    report["creates"] = creates
    compare(report)
    for name in [LOCKED, *names]:
        plane.erase(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--creates", type=int, default=5)
    parser.add_argument("--head-start", type=float, default=3.0, help="seconds between the creates and the writes")
    parser.add_argument("--hafen-root", type=Path, default=REPO)
    args = parser.parse_args(argv)
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT, hafen_root=args.hafen_root.resolve())
    plane.preflight()
    commit = subprocess.run(["git", "-C", str(args.hafen_root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    report = new_report("api_writes", writes=args.writes, clients=args.clients, creates=args.creates, prefix=PREFIX,
                        head_start=args.head_start, hafen_root=str(args.hafen_root), commit=commit or None)

    def body() -> None:
        try:
            run_benchmark(args, plane, report)
        finally:
            plane.down(report)

    return conclude(report, body, summary)


def compare(report: dict[str, Any]) -> None:
    """Failures and the ratio of busy to idle latency; a failed write or create is a problem."""
    idle, busy = report["idle"], report["busy"]
    report["ratio_busy_idle"] = {q: round(busy[q] / idle[q], 2) if idle[q] and busy[q] else None
                                 for q in ("p50", "p99")}
    report["failures"] = idle["failures"] + busy["failures"]
    if report["failures"]:
        report["problems"].append(f"{report['failures']} writes failed")
    bad_creates = {n: r for n, r in report.get("creates", {}).items() if r != "ok"}
    if bad_creates:
        report["problems"].append(f"creates failed: {bad_creates}")


def summary(report: dict[str, Any]) -> str:
    lines = []
    for phase in ("idle", "busy"):
        if data := report.get(phase):
            lines.append(f"{phase:5} writes {data['writes']:4} failures {data['failures']:4} "
                         f"p50 {data['p50']}s p99 {data['p99']}s max {data['max']}s ({data['seconds']}s)")
    lines.append(f"ratio busy/idle: {report.get('ratio_busy_idle')}; problems: {report['problems'] or 'none'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
