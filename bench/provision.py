"""Benchmark: how long from `hafen create` to a working admin login, and what an idle instance costs.

For each app (default: demo and openslides) and each run, the time from starting
`hafen create NAME --app APP --json` to the first successful admin login through
the edge proxy is measured; `hafen create` alone and the following `hafen erase`
are timed separately. As a yardstick, a plain `docker service create
--detach=false` of hafen/redis:7 is timed in the same invocation. Finally one
idle instance of each app is measured with `docker stats`.

Everything runs under the prefix "bench" (swarm objects) on the ports
38080/38443 (edge) and 38765 (control-plane web), with a fresh temporary data
directory, so it does not touch other installations on the same swarm. All
objects it makes are removed at the end, also after errors, Ctrl-C or SIGTERM.

    .venv/bin/python -m bench.provision [--apps demo,openslides] [--runs 3]

Results: bench/results/provision-<UTC timestamp>.json and provision-latest.json.
Exit status: 0 if every run succeeded and nothing was left over; 1 on a problem
(a run failed, a login never succeeded, clean-up left objects, ...); 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

import httpx

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
)

PREFIX = "bench"
HTTP_PORT = 38080
HTTPS_PORT = 38443
WEB_PORT = 38765
BASELINE_IMAGE = "hafen/redis:7"
BASELINE_NAME = f"{PREFIX}-baseline-"

LOGIN_TIMEOUT = 120.0
LOGIN_INTERVAL = 0.2
IDLE_SECONDS = 20.0

SHORT = {"demo": "demo", "openslides": "os"}
# Admin login through the edge: path, and where a CSRF token is fetched first.
LOGIN = {"demo": "/login", "openslides": "/apps/users/login/"}
CSRF_FROM = {"openslides": "/apps/users/whoami/"}
CSRF_COOKIE = "OpenSlidesCsrfToken"


def try_login(app: str, info: dict[str, Any]) -> int:
    """One admin login attempt through the edge; its HTTP status (0: no answer)."""
    headers = {"Host": info["domain"]}
    body = {"username": info["username"], "password": info["password"]}
    # A fresh client each time: no connection or cookie carries over from a failed attempt.
    with httpx.Client(base_url=f"http://127.0.0.1:{HTTP_PORT}", timeout=5) as client:
        try:
            if app in CSRF_FROM:
                token = client.get(CSRF_FROM[app], headers=headers).cookies.get(CSRF_COOKIE)
                if token:
                    headers |= {"X-CSRFToken": token, "Cookie": f"{CSRF_COOKIE}={token}"}
            return client.post(LOGIN[app], json=body, headers=headers).status_code
        except httpx.HTTPError:
            return 0


def provision_run(plane: BenchPlane, app: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name, "ok": False, "create_seconds": None, "login_seconds": None,
                              "login_attempts": 0, "erase_seconds": None, "error": "", "erase_error": ""}
    try:
        log(f"{name}: hafen create --app {app}")
        started = time.monotonic()
        info = plane.create(name, app)
        result["create_seconds"] = round(time.monotonic() - started, 3)
        deadline = time.monotonic() + LOGIN_TIMEOUT
        seen: list[int] = []  # the statuses before the first 200, without repeats
        while True:
            result["login_attempts"] += 1
            if (status := try_login(app, info)) == 200:
                break
            if status not in seen[-1:]:
                seen.append(status)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no successful login within {LOGIN_TIMEOUT:.0f}s; statuses seen: {seen}")
            time.sleep(LOGIN_INTERVAL)
        result.update(ok=True, login_seconds=round(time.monotonic() - started, 3), statuses_before_login=seen)
        log(f"{name}: create {result['create_seconds']:.2f}s, login at {result['login_seconds']:.2f}s "
            f"({result['login_attempts']} attempts)")
    except Exception as exc:
        result["error"] = str(exc)
        log(f"{name}: {exc}")
    finally:
        # Even a failed create may have left an instance behind.
        result["erase_seconds"], result["erase_error"] = plane.erase(name)
    return result


def baseline_run(n: int) -> dict[str, Any]:
    """A bare `docker service create` that waits for its task; timed until the task runs."""
    name = f"{BASELINE_NAME}{n}"
    result: dict[str, Any] = {"name": name, "ok": False, "cli_seconds": None, "task_running_seconds": None,
                              "error": ""}
    try:
        wall = time.time()
        started = time.monotonic()
        docker("service", "create", "--detach=false", "-q", "--name", name, BASELINE_IMAGE)
        result["cli_seconds"] = round(time.monotonic() - started, 3)
        # `--detach=false` also waits out the update monitor (5 s by default) after the task
        # runs; the task's own status says when it started running.
        task = docker_lines("service", "ps", name, "-q", "--no-trunc", "--filter", "desired-state=running")
        if not task:
            raise RuntimeError("no running task")
        status = json.loads(docker("inspect", "--format", "{{json .Status}}", task[0]).stdout)
        if status.get("State") != "running":
            raise RuntimeError(f"task is {status.get('State')}")
        # Python 3.11 reads Docker's nanoseconds (truncated to microseconds) and the "Z".
        result["task_running_seconds"] = round(datetime.fromisoformat(status["Timestamp"]).timestamp() - wall, 3)
        result["ok"] = True
        log(f"{name}: task running after {result['task_running_seconds']:.2f}s, "
            f"command returned after {result['cli_seconds']:.2f}s")
    except Exception as exc:
        result["error"] = str(exc)
        log(f"{name}: {exc}")
    finally:
        docker("service", "rm", name, check=False)
    return result


def measure_memory(plane: BenchPlane, apps: list[str], problems: list[str]) -> dict[str, Any]:
    """MiB per service of one idle instance of each app, from one `docker stats` sample."""
    instances = {app: f"bench-mem-{SHORT.get(app, app)}" for app in apps}
    try:
        for app, name in instances.items():
            log(f"{name}: hafen create --app {app} (memory)")
            plane.create(name, app)
        log(f"idle for {IDLE_SECONDS:.0f}s")
        time.sleep(IDLE_SECONDS)
        memory = plane.memory_by_instance()
    finally:
        for name in instances.values():
            if error := plane.erase(name)[1]:
                problems.append(f"{name}: erase: {error}")
    result: dict[str, Any] = {}
    for app, instance in instances.items():
        services = memory.get(instance, {})
        result[app] = {"instance": instance, "services_mib": {k: round(v, 1) for k, v in sorted(services.items())},
                       "total_mib": round(sum(services.values()), 1)}
    return result


def summary(report: dict[str, Any]) -> str:
    lines = ["Provisioning: `hafen create` start -> first admin login 200 through the edge (seconds)"]
    rows = []
    for app, data in report["apps"].items():
        runs = ", ".join(fmt(r["login_seconds"]) if r["ok"] else "FAIL" for r in data["runs"])
        p, c, e = data["provision"] or {}, data["create"] or {}, data["erase"] or {}
        rows.append([app, runs, *(fmt(p.get(k)) for k in ("median", "min", "max", "spread")),
                     fmt(c.get("median")), fmt(e.get("median")),
                     fmt(data["ratio_to_baseline"], 1), fmt(data["ratio_to_baseline_cli"], 1)])
    lines += table(["app", "runs", "median", "min", "max", "spread", "create", "erase", "x task", "x cli"], rows,
                   [11, 24, 7, 7, 7, 7, 7, 7, 7, 6], left=2)
    lines.append("  create / erase: median of `hafen create` alone / of `hafen erase` (not counted)")
    lines.append("  x task / x cli: median provisioning / baseline median (task running / command returned)")
    base = report["baseline"]
    t, c = base["task_running"] or {}, base["cli"] or {}
    lines.append(f"Baseline `docker service create {BASELINE_IMAGE}` ({len(base['runs'])} runs): task running median "
                 f"{fmt(t.get('median'))}s (min {fmt(t.get('min'))}, max {fmt(t.get('max'))}); command with "
                 f"--detach=false median {fmt(c.get('median'))}s")
    if report["memory"]:
        services = sorted({s for m in report["memory"].values() for s in m["services_mib"]})
        rows = [[app, *(fmt(m["services_mib"].get(s), 1) for s in services), fmt(m["total_mib"], 1)]
                for app, m in report["memory"].items()]
        lines += ["", f"Idle memory after {IDLE_SECONDS:.0f}s (MiB, docker stats)",
                  *table(["app", *services, "total"], rows, [11] + [8] * (len(services) + 1))]
    for title, items in (("Notes", report["notes"]), ("Problems", report["problems"])):
        if items:
            lines += ["", f"{title}:", *(f"  - {item}" for item in items)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--apps", default="demo,openslides", help="comma-separated apps (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="provisioning runs per app (default: %(default)s)")
    parser.add_argument("--baseline-runs", type=int, default=None,
                        help="runs of the docker service create baseline (default: --runs, at least 3)")
    parser.add_argument("--no-memory", action="store_true", help="skip the idle memory measurement")
    args = parser.parse_args(argv)
    args.apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = [a for a in args.apps if a not in LOGIN]
    if unknown or not args.apps:
        parser.error(f"unknown app(s) {', '.join(unknown) or '(none)'}; known: {', '.join(LOGIN)}")
    args.baseline_runs = args.baseline_runs or max(args.runs, 3)
    for option, value in (("--runs", args.runs), ("--baseline-runs", args.baseline_runs)):
        if not 1 <= value <= 50:
            parser.error(f"{option} must be between 1 and 50")
    return args


def run_benchmark(args: argparse.Namespace, plane: BenchPlane, report: dict[str, Any]) -> None:
    problems: list[str] = report["problems"]
    try:
        plane.up(report)  # waits for the edge, so that run 1 does not pay for the edge's start
        base = report["baseline"]
        base["runs"] = [baseline_run(n) for n in range(1, args.baseline_runs + 1)]
        base["task_running"] = stats([r["task_running_seconds"] for r in base["runs"] if r["ok"]])
        base["cli"] = stats([r["cli_seconds"] for r in base["runs"] if r["ok"]])
        problems.extend(f"{r['name']}: {r['error']}" for r in base["runs"] if r["error"])

        for app in args.apps:
            runs = [provision_run(plane, app, f"bench-{SHORT.get(app, app)}-{n}") for n in range(1, args.runs + 1)]
            data: dict[str, Any] = {"runs": runs, "provision": stats([r["login_seconds"] for r in runs if r["ok"]])}
            for step in ("create", "erase"):
                data[step] = stats([r[f"{step}_seconds"] for r in runs if r[f"{step}_seconds"] is not None])
            data["ratio_to_baseline"] = ratio(data["provision"], base["task_running"])
            data["ratio_to_baseline_cli"] = ratio(data["provision"], base["cli"])
            report["apps"][app] = data
            problems.extend(f"{r['name']}: {r['error']}" for r in runs if r["error"])
            problems.extend(f"{r['name']}: erase: {r['erase_error']}" for r in runs if r["erase_error"])

        if not args.no_memory:
            try:
                report["memory"] = measure_memory(plane, args.apps, problems)
            except Exception as exc:
                problems.append(f"memory: {exc}")
                log(f"memory: {exc}")
    finally:  # whatever happened
        plane.down(report)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT, extra_names=(BASELINE_NAME,))
    plane.preflight()
    report = new_report("provision", apps=args.apps, runs=args.runs, baseline_runs=args.baseline_runs, prefix=PREFIX,
                        http_port=HTTP_PORT, web_port=WEB_PORT, login_timeout=LOGIN_TIMEOUT,
                        login_interval=LOGIN_INTERVAL, idle_seconds=IDLE_SECONDS, size="small")
    report.update(baseline={"runs": [], "task_running": None, "cli": None}, apps={}, memory={})
    return conclude(report, lambda: run_benchmark(args, plane, report), summary)


if __name__ == "__main__":
    sys.exit(main())
