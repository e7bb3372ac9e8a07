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

    .venv/bin/python bench/provision.py [--apps demo,openslides] [--runs 3]

Results: bench/results/provision-<UTC timestamp>.json and provision-latest.json.
Exit status: 0 if every run succeeded and nothing was left over; 1 on a problem
(a run failed, a login never succeeded, clean-up left objects, ...); 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
HAFEN = REPO / ".venv" / "bin" / "hafen"

PREFIX = "bench"
HTTP_PORT = 38080
HTTPS_PORT = 38443
WEB_PORT = 38765
PREFIX_LABEL = f"hafen.prefix={PREFIX}"
BASELINE_IMAGE = "hafen/redis:7"
BASELINE_NAME = f"{PREFIX}-baseline-"

LOGIN_TIMEOUT = 120.0
LOGIN_INTERVAL = 0.2
IDLE_SECONDS = 20.0
EDGE_TIMEOUT = 120.0
# Upper bounds for the commands; `hafen create` waits for the operation itself (up to 15 min).
UP_TIMEOUT = 900
CREATE_TIMEOUT = 900
ERASE_TIMEOUT = 300
DOWN_TIMEOUT = 60
SWEEP_TIMEOUT = 120
DOCKER_TIMEOUT = 120

SHORT = {"demo": "demo", "openslides": "os"}
# Admin login through the edge: path, and where a CSRF token is fetched first.
LOGIN = {"demo": "/login", "openslides": "/apps/users/login/"}
CSRF_FROM = {"openslides": "/apps/users/whoami/"}
CSRF_COOKIE = "OpenSlidesCsrfToken"


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with a time limit; on failure raise with its last error line."""
    shown = " ".join([Path(cmd[0]).name, *cmd[1:3]])
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"`{shown}` did not finish in {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise RuntimeError(f"`{shown}` exited {proc.returncode}: {lines[-1] if lines else '(no output)'}")
    return proc


def hafen(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return run([str(HAFEN), *args], timeout=timeout, env=env)


def docker(*args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["docker", *args], timeout=timeout, check=check)


def docker_lines(*args: str) -> list[str]:
    return [line.strip() for line in docker(*args).stdout.splitlines() if line.strip()]


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"n": len(values), "median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "spread": round(max(values) - min(values), 3)}


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return round(a["median"] / b["median"], 2) if a and b and b["median"] else None


def leftovers() -> dict[str, list[str]]:
    """What of this benchmark is still there, by kind: objects labelled with its prefix, and the baseline's."""
    found = {}
    for kind in ("service", "container", "secret", "volume", "network"):
        ls = ["ps", "-a", "--format", "{{.Names}}"] if kind == "container" else [kind, "ls", "--format", "{{.Name}}"]
        names = docker_lines(*ls, "--filter", f"label={PREFIX_LABEL}")
        # `name=` matches any part of a name.
        names += [n for n in docker_lines(*ls, "--filter", f"name={BASELINE_NAME}") if n.startswith(BASELINE_NAME)]
        if names:
            found[kind] = sorted(set(names))
    return found


def sweep(problems: list[str]) -> None:
    """Remove what is left of this benchmark (the edge stays after `hafen down`, for one)."""

    def removed_all() -> bool:
        # One round over everything, services first; volumes and networks that are still busy
        # (their containers are going) fail and come again in the next round.
        left = leftovers()
        for kind, names in left.items():
            for name in names:
                if name.startswith(f"{PREFIX}-"):
                    docker(*(["rm", "--force"] if kind == "container" else [kind, "rm"]), name, check=False)
        return not left

    if not wait_until(removed_all, SWEEP_TIMEOUT, 2.0):
        problems.append(f"clean-up: left over after {SWEEP_TIMEOUT}s: {leftovers()}")


def edge_answers() -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{HTTP_PORT}/", headers={"Host": "bench-warmup.localhost"}, timeout=5)
    except httpx.HTTPError:
        return False
    return True


def create(env: dict[str, str], name: str, app: str) -> dict[str, Any]:
    return json.loads(hafen(env, "create", name, "--app", app, "--json", timeout=CREATE_TIMEOUT).stdout)


def erase(env: dict[str, str], name: str) -> tuple[float | None, str]:
    """`hafen erase NAME --yes`, never raising: (its seconds or None, error or "")."""
    started = time.monotonic()
    try:
        hafen(env, "erase", name, "--yes", timeout=ERASE_TIMEOUT)
    except Exception as exc:
        if "no instance named" in str(exc):  # a create that failed early
            return None, ""
        log(f"{name}: erase: {exc}")
        return None, str(exc)
    seconds = round(time.monotonic() - started, 3)
    log(f"{name}: erased in {seconds:.2f}s")
    return seconds, ""


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


def provision_run(env: dict[str, str], app: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name, "ok": False, "create_seconds": None, "login_seconds": None,
                              "login_attempts": 0, "erase_seconds": None, "error": "", "erase_error": ""}
    try:
        log(f"{name}: hafen create --app {app}")
        started = time.monotonic()
        info = create(env, name, app)
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
        result["erase_seconds"], result["erase_error"] = erase(env, name)
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


def to_mib(value: str) -> float:
    """A size as `docker stats` writes it (binary units: 980KiB, 31.4MiB, 1.2GiB) in MiB."""
    if not (match := re.fullmatch(r"([\d.]+)\s*([KMGT]i)?B", value.strip())):
        raise ValueError(f"unexpected memory value {value!r}")
    return float(match[1]) * 1024 ** ["", "Ki", "Mi", "Gi", "Ti"].index(match[2] or "") / 1024**2


def measure_memory(env: dict[str, str], apps: list[str], problems: list[str]) -> dict[str, Any]:
    """MiB per service of one idle instance of each app, from one `docker stats` sample."""
    instances = {app: f"bench-mem-{SHORT.get(app, app)}" for app in apps}
    try:
        for app, name in instances.items():
            log(f"{name}: hafen create --app {app} (memory)")
            create(env, name, app)
        log(f"idle for {IDLE_SECONDS:.0f}s")
        time.sleep(IDLE_SECONDS)
        lines = docker("stats", "--no-stream", "--format", "{{json .}}", timeout=60).stdout.splitlines()
    finally:
        for name in instances.values():
            if error := erase(env, name)[1]:
                problems.append(f"{name}: erase: {error}")
    rows = [json.loads(line) for line in lines if line.strip()]
    result: dict[str, Any] = {}
    for app, instance in instances.items():
        stack = f"{PREFIX}-{instance}_"
        services: dict[str, float] = {}
        containers: dict[str, int] = {}
        for row in rows:
            if row.get("Name", "").startswith(stack):
                svc = row["Name"][len(stack):].split(".")[0]
                services[svc] = services.get(svc, 0.0) + to_mib(row["MemUsage"].split("/")[0])
                containers[svc] = containers.get(svc, 0) + 1
        result[app] = {"instance": instance, "services_mib": {k: round(v, 1) for k, v in sorted(services.items())},
                       "containers": containers, "total_mib": round(sum(services.values()), 1)}
    return result


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]], widths: list[int], left: int = 1) -> list[str]:
    """The first `left` columns left-aligned, the others right-aligned."""
    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return " ".join(f"{c:<{w}}" if i < left else f"{c:>{w}}" for i, (c, w) in pairs)
    head = line(header)
    return [head, "-" * len(head), *map(line, rows)]


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


def preflight() -> None:
    """Refuse to start (without writing results) when the benchmark cannot run here."""
    if not HAFEN.exists():
        raise SystemExit(f"no hafen CLI at {HAFEN}; install the project into .venv first")
    try:
        docker("info", "--format", "{{.Swarm.LocalNodeState}}")
    except RuntimeError as exc:
        raise SystemExit(f"docker does not answer: {exc}") from None
    for port in (WEB_PORT, HTTP_PORT, HTTPS_PORT):
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is in use: another benchmark (or something else) runs; stop it first")


def run_benchmark(args: argparse.Namespace, env: dict[str, str], report: dict[str, Any]) -> None:
    problems: list[str] = report["problems"]
    if left := leftovers():
        log(f"removing leftovers of an earlier benchmark: {left}")
        report["notes"].append(f"leftovers of an earlier run were removed at the start: {left}")
        sweep(problems)
    report["host"]["docker"] = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    report["hafen_version"] = hafen(env, "--version", timeout=60).stdout.strip()
    try:
        log("starting the control plane (hafen up --detach)")
        started = time.monotonic()
        hafen(env, "up", "--detach", timeout=UP_TIMEOUT)
        log(f"control plane up in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        if not wait_until(edge_answers, EDGE_TIMEOUT):  # so that run 1 does not pay for the edge's start
            raise RuntimeError(f"the edge proxy did not answer on port {HTTP_PORT} within {EDGE_TIMEOUT:.0f}s")
        report["edge_ready_seconds"] = round(time.monotonic() - started, 3)
        log(f"edge answers after {report['edge_ready_seconds']:.1f}s")

        base = report["baseline"]
        base["runs"] = [baseline_run(n) for n in range(1, args.baseline_runs + 1)]
        base["task_running"] = stats([r["task_running_seconds"] for r in base["runs"] if r["ok"]])
        base["cli"] = stats([r["cli_seconds"] for r in base["runs"] if r["ok"]])
        problems.extend(f"{r['name']}: {r['error']}" for r in base["runs"] if r["error"])

        for app in args.apps:
            runs = [provision_run(env, app, f"bench-{SHORT.get(app, app)}-{n}") for n in range(1, args.runs + 1)]
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
                report["memory"] = measure_memory(env, args.apps, problems)
            except Exception as exc:
                problems.append(f"memory: {exc}")
                log(f"memory: {exc}")
    finally:  # whatever happened
        log("stopping the control plane (hafen down)")
        try:
            hafen(env, "down", timeout=DOWN_TIMEOUT)
        except Exception as exc:
            problems.append(f"hafen down: {exc}")
        try:
            sweep(problems)
        except Exception as exc:
            problems.append(f"clean-up: {exc}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight()
    # SIGTERM raises KeyboardInterrupt too, so that the finally blocks clean up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started_at = datetime.now(UTC)
    report: dict[str, Any] = {
        "benchmark": "provision",
        "stamp": f"{started_at:%Y%m%dT%H%M%SZ}",
        "started_at": f"{started_at:%Y-%m-%dT%H:%M:%SZ}",
        "config": {"apps": args.apps, "runs": args.runs, "baseline_runs": args.baseline_runs, "prefix": PREFIX,
                   "http_port": HTTP_PORT, "web_port": WEB_PORT, "login_timeout": LOGIN_TIMEOUT,
                   "login_interval": LOGIN_INTERVAL, "idle_seconds": IDLE_SECONDS, "size": "small"},
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "baseline": {"runs": [], "task_running": None, "cli": None},
        "apps": {}, "memory": {}, "notes": [], "problems": [],
    }
    data_dir = Path(tempfile.mkdtemp(prefix="hafen-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAFEN_")}
    env.update(HAFEN_DATA_DIR=str(data_dir), HAFEN_PREFIX=PREFIX, HAFEN_HTTP_PORT=str(HTTP_PORT),
               HAFEN_HTTPS_PORT=str(HTTPS_PORT), HAFEN_WEB_PORT=str(WEB_PORT))
    interrupted = False
    try:
        run_benchmark(args, env, report)
    except KeyboardInterrupt:
        interrupted = True
        report["problems"].append("interrupted")
    except Exception as exc:
        report["problems"].append(f"aborted: {exc}")
        log(f"aborted: {exc}")
    finally:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        log_file = data_dir / "controller.log"
        if report["problems"] and log_file.exists():
            kept = RESULTS_DIR / f"provision-{report['stamp']}-controller.log"
            shutil.copyfile(log_file, kept)
            report["controller_log"] = str(kept.relative_to(REPO))
        shutil.rmtree(data_dir, ignore_errors=True)
        report["finished_at"] = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
        path = RESULTS_DIR / f"provision-{report['stamp']}.json"
        for target in (path, RESULTS_DIR / "provision-latest.json"):
            target.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"\nresults: {path.relative_to(REPO)} (also provision-latest.json)")
    return 130 if interrupted else 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
