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

    python bench/api_writes.py [--writes 300] [--clients 3] [--creates 5] [--hafen-root DIR]

--hafen-root runs the hafen package found in DIR (e.g. an export of an older
commit) instead of this checkout's, to compare before and after a change.

Results: bench/results/api_writes-<UTC timestamp>.json and api_writes-latest.json.
Exit status 0 when no write failed and everything was cleaned up, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"

PREFIX = "benchw"
HTTP_PORT, HTTPS_PORT, WEB_PORT = 48080, 48443, 48765
LOCKED = "bwlock"
REQUEST_TIMEOUT = 60.0


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class Plane:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = Path(tempfile.mkdtemp(prefix="hafen-benchw-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HAFEN_")}
        self.env.update(HAFEN_DATA_DIR=str(self.data_dir), HAFEN_PREFIX=PREFIX, HAFEN_HTTP_PORT=str(HTTP_PORT),
                        HAFEN_HTTPS_PORT=str(HTTPS_PORT), HAFEN_WEB_PORT=str(WEB_PORT), PYTHONPATH=str(root))

    def hafen(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "hafen", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"hafen {' '.join(args[:2])} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        return proc


def sweep() -> list[str]:
    """Remove every swarm object labelled with this benchmark's prefix; return what is left."""
    label = f"label=hafen.prefix={PREFIX}"

    def names(*ls: str) -> list[str]:
        out = subprocess.run(["docker", *ls, "--filter", label], capture_output=True, text=True, check=False)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    left: list[str] = []
    for _ in range(30):
        left = []
        for kind, ls, rm in (
            ("service", ["service", "ls", "--format", "{{.Name}}"], ["service", "rm"]),
            ("container", ["ps", "-a", "--format", "{{.Names}}"], ["rm", "--force"]),
            ("secret", ["secret", "ls", "--format", "{{.Name}}"], ["secret", "rm"]),
            ("volume", ["volume", "ls", "--format", "{{.Name}}"], ["volume", "rm"]),
            ("network", ["network", "ls", "--format", "{{.Name}}"], ["network", "rm"]),
        ):
            for name in names(*ls):
                left.append(f"{kind} {name}")
                subprocess.run(["docker", *rm, name], capture_output=True, check=False)
        if not left:
            return []
        time.sleep(2)
    return left


def percentile(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 4)


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
    return {
        "writes": pairs * 2 * clients, "answered": len(samples), "failures": len(failures),
        "failure_examples": failures[:5], "seconds": round(time.monotonic() - started, 2),
        "p50": percentile(samples, 50), "p99": percentile(samples, 99),
        "max": round(max(samples), 4) if samples else None,
    }


def run(args: argparse.Namespace, plane: Plane, report: dict[str, Any]) -> None:
    log("starting the control plane")
    plane.hafen("up", "--detach", timeout=900)
    token = plane.hafen("user", "token", "admin", "--name", "bench", "--scope", "write").stdout.strip()
    log(f"creating {LOCKED}")
    plane.hafen("create", LOCKED, "--app", "demo", "--json")

    log(f"idle: {args.writes} writes from {args.clients} clients")
    report["idle"] = write_phase(token, args.writes, args.clients)
    log(f"idle: {report['idle']}")

    names = [f"bwc{n}" for n in range(1, args.creates + 1)]
    creates: dict[str, subprocess.CompletedProcess[str] | str] = {}

    def create(name: str) -> None:
        try:
            creates[name] = plane.hafen("create", name, "--app", "demo", "--json", check=False)
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
    report["creates"] = {
        name: ("ok" if not isinstance(result, str) and result.returncode == 0
               else (result if isinstance(result, str) else result.stderr.strip()[-300:]))
        for name, result in creates.items()
    }
    for name in [LOCKED, *names]:
        plane.hafen("erase", name, "--yes", check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--creates", type=int, default=5)
    parser.add_argument("--head-start", type=float, default=3.0, help="seconds between the creates and the writes")
    parser.add_argument("--hafen-root", type=Path, default=REPO)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started_at = datetime.now(UTC)
    stamp = f"{started_at:%Y%m%dT%H%M%SZ}"
    commit = subprocess.run(["git", "-C", str(args.hafen_root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    report: dict[str, Any] = {
        "benchmark": "api_writes", "stamp": stamp, "hafen_root": str(args.hafen_root), "commit": commit or None,
        "config": {"writes": args.writes, "clients": args.clients, "creates": args.creates, "prefix": PREFIX,
                   "head_start": args.head_start},
        "cpus": os.cpu_count(), "problems": [],
    }
    left = sweep()
    plane = Plane(args.hafen_root.resolve())
    try:
        run(args, plane, report)
    except KeyboardInterrupt:
        report["problems"].append("interrupted")
    except Exception as exc:
        report["problems"].append(f"aborted: {exc}")
        log(f"aborted: {exc}")
    finally:
        with_log = plane.data_dir / "controller.log"
        plane.hafen("down", check=False, timeout=120)
        if left := sweep():
            report["problems"].append(f"left over: {left}")
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        if with_log.exists():
            shutil.copyfile(with_log, RESULTS_DIR / f"api_writes-{stamp}-controller.log")
        shutil.rmtree(plane.data_dir, ignore_errors=True)
    idle, busy = report.get("idle"), report.get("busy")
    if idle and busy:
        report["ratio_busy_idle"] = {q: round(busy[q] / idle[q], 2) if idle[q] and busy[q] else None
                                     for q in ("p50", "p99")}
        report["failures"] = idle["failures"] + busy["failures"]
    bad_creates = {n: r for n, r in report.get("creates", {}).items() if r != "ok"}
    if bad_creates:
        report["problems"].append(f"creates failed: {bad_creates}")
    for target in (RESULTS_DIR / f"api_writes-{stamp}.json", RESULTS_DIR / "api_writes-latest.json"):
        target.write_text(json.dumps(report, indent=2) + "\n")
    for phase in ("idle", "busy"):
        data = report.get(phase)
        if data:
            print(f"{phase:5} writes {data['writes']:4} failures {data['failures']:4} "
                  f"p50 {data['p50']}s p99 {data['p99']}s max {data['max']}s ({data['seconds']}s)")
    print(f"ratio busy/idle: {report.get('ratio_busy_idle')}; problems: {report['problems'] or 'none'}")
    print(f"results: bench/results/api_writes-{stamp}.json")
    failed = report.get("failures", 1) or report["problems"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
