"""Benchmark: how long the web UI's dashboard takes with 500 instances.

A throw-away installation (temporary SQLite data directory, fake engine) gets
500 instances spread over 10 organisations, each with the observed service
states the controller would record. The control plane's WSGI application is
served by waitress, as `hafen up` serves it, on a free loopback port, and
timed over HTTP with a logged-in session:

- the dashboard as an operator (its first page of 100, and all 500 on one
  page) and as the admin of one organisation (50 instances);
- the partial that the dashboard polls every 2 s to refresh the table;
- the API's list of all 500 instances;
- as a baseline in the same run, `/healthz` (one query, a tiny JSON answer).

Each URL is fetched `--runs` times, interleaved so that a noisy neighbour hurts
all of them alike; the report gives medians, spreads and ratios to the baseline,
and the number of SQL queries per page (which must not grow with the instances).

    .venv/bin/python bench/dashboard.py [--instances 500] [--runs 30]

Results: bench/results/dashboard-<UTC timestamp>.json and dashboard-latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
ORGANISATIONS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def populate(count: int) -> dict[str, Any]:
    from django.contrib.auth.models import User

    from hafen.access.models import Membership, Organisation, Role
    from hafen.instances.models import Instance, State

    orgs = [Organisation.objects.create(slug=f"customer-{i:02d}", name=f"Customer {i}") for i in range(ORGANISATIONS)]
    services = {
        "web": {"replicas": 1, "running": 1, "state": "running", "error": ""},
        "db": {"replicas": 1, "running": 1, "state": "running", "error": ""},
        "redis": {"replicas": 1, "running": 1, "state": "running", "error": ""},
        "setup": {"replicas": 1, "running": 0, "state": "complete", "error": ""},
    }
    states = [State.RUNNING] * 8 + [State.STOPPED, State.CREATING]
    Instance.objects.bulk_create(
        Instance(name=f"event-{i:04d}", app="openslides" if i % 3 else "demo", version="3.3" if i % 3 else "1.0",
                 domain=f"event-{i:04d}.example.org", organisation=orgs[i % ORGANISATIONS],
                 state=states[i % len(states)], observed={"services": services})
        for i in range(count)
    )
    operator = User.objects.create_user("operator", is_staff=True)
    admin = User.objects.create_user("customer-admin")
    Membership.objects.create(user=admin, organisation=orgs[0], role=Role.ADMIN)
    return {"operator": operator, "admin": admin}


def session_cookie(user: Any) -> tuple[str, str]:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return settings.SESSION_COOKIE_NAME, client.cookies[settings.SESSION_COOKIE_NAME].value


def query_count(user: Any, url: str, headers: dict[str, str]) -> tuple[int, int]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, headers=headers)
    return len(queries), response.status_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    if args.instances < 1 or args.runs < 3:
        print("error: --instances must be at least 1 and --runs at least 3", file=sys.stderr)
        return 2

    data_dir = Path(tempfile.mkdtemp(prefix="hafen-bench-dashboard-"))
    os.environ.update(HAFEN_DATA_DIR=str(data_dir), HAFEN_ENGINE="fake", HAFEN_PREFIX="benchdash")
    sys.path.insert(0, str(REPO))
    try:
        return run(args, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run(args: argparse.Namespace, data_dir: Path) -> int:
    import httpx
    from django.core.wsgi import get_wsgi_application
    from waitress.server import create_server  # type: ignore[import-untyped]

    from hafen.django_setup import setup

    setup()
    users = populate(args.instances)
    port = free_port()
    server = create_server(get_wsgi_application(), host="127.0.0.1", port=port, threads=4)
    threading.Thread(target=server.run, daemon=True).start()

    htmx = {"HX-Request": "true"}
    cases: dict[str, tuple[str, str, dict[str, str]]] = {
        "healthz (baseline)": ("operator", "/healthz", {}),
        "dashboard, operator (first 100)": ("operator", "/", {}),
        f"dashboard, operator (all {args.instances} on one page)": ("operator", "/?per_page=500", {}),
        "dashboard, customer admin (1 of 10 orgs)": ("admin", "/", {}),
        "dashboard table refresh (htmx), operator": ("operator", "/rows", htmx),
        f"API list, operator ({args.instances})": ("operator", f"/api/v1/instances?per_page={args.instances}", {}),
    }
    clients = {}
    for role, user in users.items():
        name, value = session_cookie(user)
        clients[role] = httpx.Client(base_url=f"http://127.0.0.1:{port}", cookies={name: value}, timeout=60)
    timings: dict[str, list[float]] = {case: [] for case in cases}
    sizes: dict[str, int] = {}
    for run_index in range(args.runs + 2):
        for case, (role, url, headers) in cases.items():
            started = time.perf_counter()
            response = clients[role].get(url, headers=headers)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                print(f"error: {url} answered {response.status_code}", file=sys.stderr)
                return 1
            sizes[case] = len(response.content)
            if run_index >= 2:  # two warm-up rounds
                timings[case].append(elapsed * 1000)

    baseline = statistics.median(timings["healthz (baseline)"])
    report: dict[str, Any] = {
        "benchmark": "dashboard",
        "stamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "instances": args.instances,
        "runs": args.runs,
        "results": {},
    }
    print(f"{'page':<48} {'median':>9} {'min':>8} {'max':>8} {'ratio':>7} {'queries':>8} {'KiB':>7}")
    for case, (role, url, headers) in cases.items():
        values = timings[case]
        queries, _ = query_count(users[role], url, headers)
        median = statistics.median(values)
        row = {"url": url, "role": role, "median_ms": round(median, 2), "min_ms": round(min(values), 2),
               "max_ms": round(max(values), 2), "ratio_to_baseline": round(median / baseline, 1),
               "queries": queries, "bytes": sizes[case]}
        report["results"][case] = row
        print(f"{case:<48} {median:>7.1f}ms {min(values):>6.1f}ms {max(values):>6.1f}ms "
              f"{median / baseline:>6.1f}x {queries:>8} {sizes[case] / 1024:>7.1f}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"dashboard-{report['stamp']}.json"
    for target in (path, RESULTS_DIR / "dashboard-latest.json"):
        target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(REPO)} (also dashboard-latest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
