"""Benchmark: how long from `hafen create` to a working admin login, and what an idle instance costs.

For each app (default: demo and openslides) and each run, the time from starting
`hafen create NAME --app APP --json` to the first successful admin login through
the edge proxy is measured; `hafen create` alone and the following
`hafen erase` are timed separately. As a yardstick, a plain
`docker service create --detach=false` of hafen/redis:7 is timed in the same
invocation. Finally one idle instance of each app is measured with
`docker stats`.

Everything runs under the prefix "bench" (swarm objects) on the ports
38080/38443 (edge) and 38765 (control-plane web), with a fresh temporary data
directory, so it does not touch other installations on the same swarm. All
objects it makes are removed at the end, also after errors or Ctrl-C.

    .venv/bin/python bench/provision.py [--apps demo,openslides] [--runs 3]

Results: bench/results/provision-<UTC timestamp>.json and provision-latest.json.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
# Upper bounds for the commands; `hafen create` waits for the operation itself (up to 15 min).
UP_TIMEOUT = 900
CREATE_TIMEOUT = 900
ERASE_TIMEOUT = 300
DOWN_TIMEOUT = 60
DOCKER_TIMEOUT = 120

SHORT = {"demo": "demo", "openslides": "os"}
# Admin login through the edge: path, and whether a CSRF token is fetched first.
LOGIN = {"demo": "/login", "openslides": "/apps/users/login/"}
CSRF_FROM = {"openslides": "/apps/users/whoami/"}
CSRF_COOKIE = "OpenSlidesCsrfToken"


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so that the finally blocks clean up."""


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- running commands ------------------------------------------------------------------------------


def hafen_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAFEN_")}
    env.update(
        HAFEN_DATA_DIR=str(data_dir),
        HAFEN_PREFIX=PREFIX,
        HAFEN_HTTP_PORT=str(HTTP_PORT),
        HAFEN_HTTPS_PORT=str(HTTPS_PORT),
        HAFEN_WEB_PORT=str(WEB_PORT),
    )
    return env


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with a time limit; on failure raise with its last error line."""
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"`{' '.join(cmd[:3])}` did not finish in {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise RuntimeError(f"`{' '.join(cmd[:3])}` exited {proc.returncode}: {lines[-1] if lines else '(no output)'}")
    return proc


def docker(*args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["docker", *args], timeout=timeout, check=check)


def docker_lines(*args: str) -> list[str]:
    return [line.strip() for line in docker(*args).stdout.splitlines() if line.strip()]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- statistics ------------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "spread": round(max(values) - min(values), 3),
    }


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not b["median"]:
        return None
    return round(a["median"] / b["median"], 2)


# -- the control plane and clean-up ----------------------------------------------------------------


def bench_leftovers() -> dict[str, list[str]]:
    """Swarm objects of this benchmark: labelled with prefix bench, or baseline services."""
    label = f"label={PREFIX_LABEL}"
    services = docker_lines("service", "ls", "--filter", label, "--format", "{{.Name}}")
    services += [n for n in docker_lines("service", "ls", "--filter", f"name={BASELINE_NAME}", "--format",
                                         "{{.Name}}") if n.startswith(BASELINE_NAME)]
    return {
        "services": sorted(set(services)),
        "containers": docker_lines("ps", "-a", "--filter", label, "--format", "{{.Names}}"),
        "networks": docker_lines("network", "ls", "--filter", label, "--format", "{{.Name}}"),
        "volumes": docker_lines("volume", "ls", "--filter", label, "--format", "{{.Name}}"),
        "secrets": docker_lines("secret", "ls", "--filter", label, "--format", "{{.Name}}"),
    }


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def sweep(problems: list[str]) -> None:
    """Remove what is left of this benchmark (the edge stays after `hafen down`, for one)."""
    left = bench_leftovers()
    for name in left["services"]:
        if not name.startswith(f"{PREFIX}-"):
            continue
        docker("service", "rm", name, check=False)

    def running_gone() -> bool:
        if docker_lines("ps", "-q", "--filter", f"label={PREFIX_LABEL}"):
            return False
        names = docker_lines("ps", "--format", "{{.Names}}", "--filter", f"name={BASELINE_NAME}")
        return not any(n.startswith(BASELINE_NAME) for n in names)

    if left["services"] and not wait_until(running_gone, 60):
        problems.append("clean-up: containers of removed bench services still running after 60s")
    # Stopped containers that swarm does not remove with their service (those of jobs, on
    # Docker 20.10: moby/moby#42789) keep volumes busy.
    status = ["--filter", "status=exited", "--filter", "status=created", "--filter", "status=dead"]
    stopped = docker_lines("ps", "-a", *status, "--filter", f"label={PREFIX_LABEL}", "--format", "{{.ID}} {{.Names}}")
    stopped += docker_lines("ps", "-a", *status, "--filter", f"name={BASELINE_NAME}", "--format", "{{.ID}} {{.Names}}")
    for line in stopped:
        cid, name = line.split(" ", 1)
        if name.startswith(f"{PREFIX}-"):
            docker("rm", cid, check=False)
    # Volumes and networks stay busy a moment after their containers have gone.
    for kind in ("secrets", "volumes", "networks"):
        for name in left[kind]:
            if not name.startswith(f"{PREFIX}-"):
                continue
            verb = {"secrets": "secret", "volumes": "volume", "networks": "network"}[kind]

            def removed(verb: str = verb, name: str = name) -> bool:
                return docker(verb, "rm", name, check=False).returncode == 0

            if not wait_until(removed, 30, 1.0):
                problems.append(f"clean-up: could not remove {verb} {name}")
    rest = {k: v for k, v in bench_leftovers().items() if v}
    if rest:
        problems.append(f"clean-up: left over: {rest}")


@contextmanager
def control_plane(env: dict[str, str], problems: list[str]) -> Iterator[None]:
    """`hafen up --detach`, and on the way out `hafen down` and the sweep, whatever happened."""
    try:
        log("starting the control plane (hafen up --detach)")
        started = time.monotonic()
        run([str(HAFEN), "up", "--detach"], timeout=UP_TIMEOUT, env=env)
        log(f"control plane up in {time.monotonic() - started:.1f}s")
        yield
    finally:
        log("stopping the control plane (hafen down)")
        try:
            run([str(HAFEN), "down"], timeout=DOWN_TIMEOUT, env=env)
        except Exception as exc:
            problems.append(f"hafen down: {exc}")
        try:
            sweep(problems)
        except Exception as exc:
            problems.append(f"clean-up: {exc}")


def wait_for_edge(timeout: float = 120) -> float:
    """Seconds until the edge proxy answers HTTP at all (so run 1 does not pay for its start)."""
    started = time.monotonic()

    def answers() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{HTTP_PORT}/", headers={"Host": "bench-warmup.localhost"}, timeout=2)
        except httpx.HTTPError:
            return False
        return True

    if not wait_until(answers, timeout, 0.5):
        raise RuntimeError(f"the edge proxy did not answer on port {HTTP_PORT} within {timeout:.0f}s")
    return time.monotonic() - started


# -- instances -------------------------------------------------------------------------------------


def create(env: dict[str, str], name: str, app: str) -> dict[str, Any]:
    proc = run([str(HAFEN), "create", name, "--app", app, "--json"], timeout=CREATE_TIMEOUT, env=env)
    return json.loads(proc.stdout)


def blocking_containers(name: str) -> dict[str, str]:
    """Stopped containers of an instance that hold a volume (id -> name), looked at before an erase.

    While an instance runs, only its finished setup job has a stopped container. Docker 20.10
    leaves that container behind when the job's service is removed (moby/moby#42789), and if it
    mounts a volume, that volume cannot be removed, so `hafen erase` never finishes.
    """
    labels = ["--filter", f"label={PREFIX_LABEL}", "--filter", f"label=hafen.instance={name}"]
    found = {}
    for line in docker_lines("ps", "-a", "--filter", "status=exited", "--filter", "status=dead", *labels,
                             "--format", "{{.ID}} {{.Names}}"):
        cid, container = line.split(" ", 1)
        volumes = docker("inspect", "--format", '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}',
                         cid, check=False).stdout.split()
        if volumes and container.startswith(f"{PREFIX}-{name}_"):
            found[cid] = container
    return found


def reap(name: str, candidates: dict[str, str]) -> list[str]:
    """Remove the candidates once all services of the instance are gone; the names removed."""
    labels = ["--filter", f"label={PREFIX_LABEL}", "--filter", f"label=hafen.instance={name}"]
    if not candidates or docker_lines("service", "ls", "-q", *labels):
        return []
    removed = []
    for cid, container in list(candidates.items()):
        docker("rm", cid, check=False)
        del candidates[cid]
        removed.append(container)
    return removed


def erase(env: dict[str, str], name: str, workaround: bool) -> tuple[float, list[str]]:
    """`hafen erase NAME --yes`: its seconds, and the containers the workaround removed meanwhile."""
    candidates = blocking_containers(name) if workaround else {}
    started = time.monotonic()
    deadline = started + ERASE_TIMEOUT
    reaped: list[str] = []
    proc = subprocess.Popen([str(HAFEN), "erase", name, "--yes"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"`hafen erase {name}` did not finish in {ERASE_TIMEOUT}s") from None
                reaped += reap(name, candidates)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        lines = [line for line in (err or out).splitlines() if line.strip()]
        raise RuntimeError(f"`hafen erase {name}` exited {proc.returncode}: {lines[-1] if lines else ''}")
    return elapsed, reaped


def try_login(app: str, info: dict[str, Any]) -> int:
    """One admin login attempt through the edge; its HTTP status (0: no answer)."""
    base = f"http://127.0.0.1:{HTTP_PORT}"
    headers = {"Host": info["domain"]}
    body = {"username": info["username"], "password": info["password"]}
    # A fresh client each time: no connection or cookie carries over from a failed attempt.
    with httpx.Client(base_url=base, timeout=5) as client:
        try:
            if app in CSRF_FROM:
                first = client.get(CSRF_FROM[app], headers=headers)
                token = first.cookies.get(CSRF_COOKIE)
                if token:
                    headers = {**headers, "X-CSRFToken": token, "Cookie": f"{CSRF_COOKIE}={token}"}
            response = client.post(LOGIN[app], json=body, headers=headers)
        except httpx.HTTPError:
            return 0
    return response.status_code


def poll_login(app: str, info: dict[str, Any]) -> tuple[bool, int, list[int]]:
    """Try the login until it answers 200, at most LOGIN_TIMEOUT; (ok, attempts, statuses seen)."""
    deadline = time.monotonic() + LOGIN_TIMEOUT
    attempts = 0
    seen: list[int] = []
    while True:
        attempts += 1
        status = try_login(app, info)
        if status == 200:
            return True, attempts, seen
        if not seen or seen[-1] != status:
            seen.append(status)
        if time.monotonic() > deadline:
            return False, attempts, seen
        time.sleep(LOGIN_INTERVAL)


def provision_run(env: dict[str, str], app: str, name: str, workaround: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name, "ok": False, "create_seconds": None, "login_seconds": None,
                              "login_attempts": 0, "erase_seconds": None, "error": ""}
    try:
        log(f"{name}: hafen create --app {app}")
        started = time.monotonic()
        info = create(env, name, app)
        result["create_seconds"] = round(time.monotonic() - started, 3)
        ok, attempts, seen = poll_login(app, info)
        result["login_attempts"] = attempts
        if ok:
            result["login_seconds"] = round(time.monotonic() - started, 3)
            result["ok"] = True
            if seen:
                result["statuses_before_login"] = seen
            log(f"{name}: create {result['create_seconds']:.2f}s, login at {result['login_seconds']:.2f}s "
                f"({attempts} attempts)")
        else:
            result["error"] = f"no successful login within {LOGIN_TIMEOUT:.0f}s; statuses seen: {seen}"
            log(f"{name}: {result['error']}")
    except Exception as exc:
        result["error"] = str(exc)
        log(f"{name}: {exc}")
    finally:
        # Even a failed create may have left an instance behind.
        try:
            seconds, reaped = erase(env, name, workaround)
            result["erase_seconds"] = round(seconds, 3)
            result["erase_reaped_containers"] = reaped
            log(f"{name}: erased in {result['erase_seconds']:.2f}s"
                + (f" (the workaround removed {len(reaped)} leftover job container(s))" if reaped else ""))
        except Exception as exc:
            if "no instance named" not in str(exc):
                result["erase_error"] = str(exc)
                log(f"{name}: erase: {exc}")
    return result


# -- baseline --------------------------------------------------------------------------------------


def parse_docker_time(value: str) -> datetime:
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00"))


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
        result["task_running_seconds"] = round(parse_docker_time(status["Timestamp"]).timestamp() - wall, 3)
        result["ok"] = True
        log(f"{name}: task running after {result['task_running_seconds']:.2f}s, "
            f"command returned after {result['cli_seconds']:.2f}s")
    except Exception as exc:
        result["error"] = str(exc)
        log(f"{name}: {exc}")
    finally:
        docker("service", "rm", name, check=False)
    return result


# -- memory ----------------------------------------------------------------------------------------

_UNITS = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


def to_mib(value: str) -> float:
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]+)\s*", value)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"unexpected memory value {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2).lower()] / 1024**2


def memory_of(instances: dict[str, str]) -> dict[str, Any]:
    """MiB per service of each instance (app -> instance name), from one `docker stats` sample."""
    lines = docker("stats", "--no-stream", "--format", "{{json .}}", timeout=60).stdout.splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    result: dict[str, Any] = {}
    for app, instance in instances.items():
        stack = f"{PREFIX}-{instance}_"
        services: dict[str, float] = {}
        containers: dict[str, int] = {}
        for row in rows:
            name = row.get("Name", "")
            if not name.startswith(stack):
                continue
            svc = name[len(stack):].split(".")[0]
            used = to_mib(row["MemUsage"].split("/")[0])
            services[svc] = services.get(svc, 0.0) + used
            containers[svc] = containers.get(svc, 0) + 1
        result[app] = {
            "instance": instance,
            "services_mib": {k: round(v, 1) for k, v in sorted(services.items())},
            "containers": containers,
            "total_mib": round(sum(services.values()), 1),
        }
    return result


def measure_memory(env: dict[str, str], apps: list[str], workaround: bool, problems: list[str]) -> dict[str, Any]:
    names = {app: f"bench-mem-{SHORT.get(app, app)}" for app in apps}
    made: list[str] = []
    try:
        for app, name in names.items():
            log(f"{name}: hafen create --app {app} (memory)")
            made.append(name)
            create(env, name, app)
        log(f"idle for {IDLE_SECONDS:.0f}s")
        time.sleep(IDLE_SECONDS)
        return memory_of(names)
    finally:
        for name in made:
            try:
                seconds, reaped = erase(env, name, workaround)
                log(f"{name}: erased in {seconds:.2f}s")
                if reaped:
                    problems.append(f"{name}: erase needed the leftover job container workaround: {reaped}")
            except Exception as exc:
                if "no instance named" not in str(exc):
                    problems.append(f"{name}: erase: {exc}")
                    log(f"{name}: erase: {exc}")


# -- report ----------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary(report: dict[str, Any]) -> str:
    lines = []
    base = report["baseline"]
    lines.append("Provisioning: `hafen create` start -> first admin login 200 through the edge (seconds)")
    header = f"{'app':<11} {'runs':<24} {'median':>7} {'min':>7} {'max':>7} {'spread':>7} {'create':>7} " \
             f"{'erase':>8} {'x task':>7} {'x cli':>6}"
    lines.append(header)
    lines.append("-" * len(header))
    for app, data in report["apps"].items():
        runs = ", ".join(fmt(r["login_seconds"]) if r["ok"] else "FAIL" for r in data["runs"])
        p, c, e = data["provision"] or {}, data["create"] or {}, data["erase"] or {}
        mark = "*" if any(r.get("erase_reaped_containers") for r in data["runs"]) else " "
        lines.append(
            f"{app:<11} {runs:<24} {fmt(p.get('median')):>7} {fmt(p.get('min')):>7} {fmt(p.get('max')):>7} "
            f"{fmt(p.get('spread')):>7} {fmt(c.get('median')):>7} {fmt(e.get('median')):>7}{mark} "
            f"{fmt(data['ratio_to_baseline'], 1):>7} {fmt(data['ratio_to_baseline_cli'], 1):>6}"
        )
    lines.append("  create: median of `hafen create` alone; erase: median of `hafen erase` (not counted;")
    lines.append("  * = only finished because the benchmark removed leftover job containers, see problems)")
    lines.append("  x task / x cli: median provisioning / baseline median (task running / command returned)")
    t, c = base["task_running"] or {}, base["cli"] or {}
    lines.append(
        f"Baseline `docker service create {BASELINE_IMAGE}` ({len(base['runs'])} runs): task running median "
        f"{fmt(t.get('median'))}s (min {fmt(t.get('min'))}, max {fmt(t.get('max'))}); command with "
        f"--detach=false median {fmt(c.get('median'))}s"
    )
    if report["memory"]:
        lines.append("")
        lines.append(f"Idle memory after {IDLE_SECONDS:.0f}s (MiB, docker stats)")
        services = sorted({s for m in report["memory"].values() for s in m["services_mib"]})
        header = f"{'app':<11} " + " ".join(f"{s:>8}" for s in services) + f" {'total':>8}"
        lines.append(header)
        lines.append("-" * len(header))
        for app, mem in report["memory"].items():
            cells = " ".join(f"{fmt(mem['services_mib'].get(s), 1):>8}" for s in services)
            lines.append(f"{app:<11} {cells} {fmt(mem['total_mib'], 1):>8}")
    if report["problems"]:
        lines.append("")
        lines.append("Problems:")
        lines.extend(f"  - {p}" for p in report["problems"])
    return "\n".join(lines)


def write_report(report: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"provision-{report['stamp']}.json"
    text = json.dumps(report, indent=2) + "\n"
    path.write_text(text)
    (RESULTS_DIR / "provision-latest.json").write_text(text)
    return path


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--apps", default="demo,openslides", help="comma-separated apps (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="provisioning runs per app (default: %(default)s)")
    parser.add_argument("--baseline-runs", type=int, default=None,
                        help="runs of the docker service create baseline (default: --runs, at least 3)")
    parser.add_argument("--no-memory", action="store_true", help="skip the idle memory measurement")
    parser.add_argument(
        "--no-reap", dest="reap", action="store_false",
        help="during `hafen erase`, do not remove the stopped setup-job containers that Docker 20.10 leaves "
             "behind (moby/moby#42789) and that keep the instance's volumes busy; without this workaround "
             "erasing an app whose job mounts a volume (openslides) does not finish",
    )
    args = parser.parse_args(argv)
    args.apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = [a for a in args.apps if a not in LOGIN]
    if unknown or not args.apps:
        parser.error(f"unknown app(s) {', '.join(unknown) or '(none)'}; known: {', '.join(LOGIN)}")
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be between 1 and 50")
    args.baseline_runs = args.baseline_runs or max(args.runs, 3)
    if not 1 <= args.baseline_runs <= 50:
        parser.error("--baseline-runs must be between 1 and 50")
    return args


def preflight(problems: list[str]) -> None:
    if not HAFEN.exists():
        raise SystemExit(f"no hafen CLI at {HAFEN}; install the project into .venv first")
    docker("info", "--format", "{{.Swarm.LocalNodeState}}")
    for port in (WEB_PORT, HTTP_PORT, HTTPS_PORT):
        if port_open(port):
            raise SystemExit(f"port {port} is in use: another benchmark (or something else) runs; stop it first")
    left = {k: v for k, v in bench_leftovers().items() if v}
    if left:
        log(f"removing leftovers of an earlier benchmark: {left}")
        problems.append(f"leftovers of an earlier run were removed at the start: {left}")
        sweep(problems)


def on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    started_at = datetime.now(UTC)
    problems: list[str] = []
    report: dict[str, Any] = {
        "benchmark": "provision",
        "stamp": f"{started_at:%Y%m%dT%H%M%SZ}",
        "started_at": started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "config": {"apps": args.apps, "runs": args.runs, "baseline_runs": args.baseline_runs, "prefix": PREFIX,
                   "http_port": HTTP_PORT, "web_port": WEB_PORT, "login_timeout": LOGIN_TIMEOUT,
                   "login_interval": LOGIN_INTERVAL, "idle_seconds": IDLE_SECONDS, "size": "small",
                   "reap_job_containers": args.reap},
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "baseline": {"runs": [], "task_running": None, "cli": None},
        "apps": {},
        "memory": {},
        "problems": problems,
    }
    data_dir = Path(tempfile.mkdtemp(prefix="hafen-bench-"))
    env = hafen_env(data_dir)
    interrupted = False
    try:
        preflight(problems)
        report["host"]["docker"] = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        report["hafen_version"] = run([str(HAFEN), "--version"], timeout=60, env=env).stdout.strip()
        with control_plane(env, problems):
            report["edge_ready_seconds"] = round(wait_for_edge(), 3)
            log(f"edge answers after {report['edge_ready_seconds']:.1f}s")

            for n in range(1, args.baseline_runs + 1):
                report["baseline"]["runs"].append(baseline_run(n))
            ok_base = [r for r in report["baseline"]["runs"] if r["ok"]]
            report["baseline"]["task_running"] = stats([r["task_running_seconds"] for r in ok_base])
            report["baseline"]["cli"] = stats([r["cli_seconds"] for r in ok_base])

            for app in args.apps:
                runs = [provision_run(env, app, f"bench-{SHORT.get(app, app)}-{n}", args.reap)
                        for n in range(1, args.runs + 1)]
                ok = [r for r in runs if r["ok"]]
                data: dict[str, Any] = {
                    "runs": runs,
                    "provision": stats([r["login_seconds"] for r in ok]),
                    "create": stats([r["create_seconds"] for r in runs if r["create_seconds"] is not None]),
                    "erase": stats([r["erase_seconds"] for r in runs if r["erase_seconds"] is not None]),
                }
                data["ratio_to_baseline"] = ratio(data["provision"], report["baseline"]["task_running"])
                data["ratio_to_baseline_cli"] = ratio(data["provision"], report["baseline"]["cli"])
                report["apps"][app] = data
                problems.extend(f"{r['name']}: {r['error']}" for r in runs if r["error"])
                problems.extend(f"{r['name']}: erase: {r['erase_error']}" for r in runs if r.get("erase_error"))
                problems.extend(
                    f"{r['name']}: erase needed the leftover job container workaround (hafen alone does not "
                    f"finish; moby/moby#42789): {r['erase_reaped_containers']}"
                    for r in runs if r.get("erase_reaped_containers"))

            if not args.no_memory:
                try:
                    report["memory"] = measure_memory(env, args.apps, args.reap, problems)
                except Exception as exc:
                    problems.append(f"memory: {exc}")
                    log(f"memory: {exc}")
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        problems.append("interrupted")
    except Exception as exc:
        problems.append(f"aborted: {exc}")
        log(f"aborted: {exc}")
    finally:
        log_file = data_dir / "controller.log"
        if problems and log_file.exists():
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            kept = RESULTS_DIR / f"provision-{report['stamp']}-controller.log"
            shutil.copyfile(log_file, kept)
            report["controller_log"] = str(kept.relative_to(REPO))
        shutil.rmtree(data_dir, ignore_errors=True)
        report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        path = write_report(report)
    print(summary(report))
    print(f"\nresults: {path.relative_to(REPO)} (also provision-latest.json)")
    failed = interrupted or any(not r["ok"] for a in report["apps"].values() for r in a["runs"])
    return 130 if interrupted else (1 if failed or problems else 0)


if __name__ == "__main__":
    sys.exit(main())
