"""What the benchmarks share: running commands, statistics, tables, and a control plane of their own.

Each benchmark runs its own control plane under its own prefix and ports, with a
fresh temporary data directory, so that it never touches other installations on
the same swarm, and removes every object carrying its prefix at the end.
"""

from __future__ import annotations

import json
import os
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

DOCKER_TIMEOUT = 120
UP_TIMEOUT = 900
CREATE_TIMEOUT = 900
ERASE_TIMEOUT = 300
DOWN_TIMEOUT = 60
SWEEP_TIMEOUT = 120
EDGE_TIMEOUT = 120.0


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None, check: bool = True,
        cwd: Path | None = None, shown: str = "") -> subprocess.CompletedProcess[str]:
    """Run a command with a time limit; on failure raise with its last error line."""
    shown = shown or " ".join([Path(cmd[0]).name, *cmd[1:3]])
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"`{shown}` did not finish in {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise RuntimeError(f"`{shown}` exited {proc.returncode}: {lines[-1] if lines else '(no output)'}")
    return proc


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


def stats(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any] | None:
    """Median, p90, min, max and spread of the values, each multiplied by `scale` (say, 1000 for ms)."""
    if not values:
        return None
    ordered = sorted(v * scale for v in values)
    return {"n": len(ordered), "median": round(statistics.median(ordered), digits),
            "p90": round(percentile(ordered, 0.9) or 0, digits), "min": round(ordered[0], digits),
            "max": round(ordered[-1], digits), "spread": round(ordered[-1] - ordered[0], digits)}


def percentile(values: list[float], share: float) -> float | None:
    """The value below which `share` of the values lie (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return round(a["median"] / b["median"], 2) if a and b and b["median"] else None


def to_mib(value: str) -> float:
    """A size as `docker stats` writes it (binary units: 980KiB, 31.4MiB, 1.2GiB) in MiB."""
    if not (match := re.fullmatch(r"([\d.]+)\s*([KMGT]i)?B", value.strip())):
        raise ValueError(f"unexpected memory value {value!r}")
    return float(match[1]) * 1024 ** ["", "Ki", "Mi", "Gi", "Ti"].index(match[2] or "") / 1024**2


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]], widths: list[int], left: int = 1) -> list[str]:
    """The first `left` columns left-aligned, the others right-aligned."""
    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return " ".join(f"{c:<{w}}" if i < left else f"{c:>{w}}" for i, (c, w) in pairs)
    head = line(header)
    return [head, "-" * len(head), *map(line, rows)]


def write_results(name: str, report: dict[str, Any]) -> Path:
    """bench/results/NAME-STAMP.json and NAME-latest.json; return the first."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    report["finished_at"] = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
    path = RESULTS_DIR / f"{name}-{report['stamp']}.json"
    for target in (path, RESULTS_DIR / f"{name}-latest.json"):
        target.write_text(json.dumps(report, indent=2) + "\n")
    return path


def conclude(report: dict[str, Any], body: Callable[[], None], summary: Callable[[dict[str, Any]], str]) -> int:
    """Run the benchmark's body, write its results whatever happens, print its summary; the exit status:
    0 when all went well, 1 on a problem, 130 when interrupted (Ctrl-C or SIGTERM)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # so that the finally blocks clean up
    interrupted = False
    try:
        body()
    except KeyboardInterrupt:
        interrupted = True
        report["problems"].append("interrupted")
    except Exception as exc:
        report["problems"].append(f"aborted: {exc}")
        log(f"aborted: {exc}")
    finally:
        path = write_results(report["benchmark"], report)
    print(summary(report))
    print(f"\nresults: bench/results/{path.name} (also {report['benchmark']}-latest.json)")
    return 130 if interrupted else 1 if report["problems"] else 0


def new_report(name: str, **config: Any) -> dict[str, Any]:
    import platform

    started_at = datetime.now(UTC)
    return {
        "benchmark": name, "stamp": f"{started_at:%Y%m%dT%H%M%SZ}", "started_at": f"{started_at:%Y-%m-%dT%H:%M:%SZ}",
        "config": config,
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "notes": [], "problems": [],
    }


class BenchPlane:
    """A control plane of the benchmark's own: prefix, ports and a temporary data directory."""

    def __init__(self, prefix: str, http_port: int, https_port: int, web_port: int,
                 extra_names: tuple[str, ...] = (), hafen_root: Path = REPO) -> None:
        self.prefix = prefix
        self.root = hafen_root  # another checkout (e.g. an export of an older commit) to compare with
        self.http_port, self.https_port, self.web_port = http_port, https_port, web_port
        self.extra_names = extra_names  # objects without the prefix label that the benchmark makes itself
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"hafen-{prefix}-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HAFEN_")}
        self.env.update(HAFEN_DATA_DIR=str(self.data_dir), HAFEN_PREFIX=prefix, HAFEN_HTTP_PORT=str(http_port),
                        HAFEN_HTTPS_PORT=str(https_port), HAFEN_WEB_PORT=str(web_port), HAFEN_REGISTRY_PORT="0")
        if hafen_root != REPO:
            self.env["PYTHONPATH"] = str(hafen_root)

    @property
    def label(self) -> str:
        return f"hafen.prefix={self.prefix}"

    def hafen(self, *args: str, timeout: float = CREATE_TIMEOUT, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "hafen", *args], timeout=timeout, env=self.env, check=check, cwd=self.root,
                   shown=" ".join(["hafen", *args[:2]]))

    def preflight(self) -> None:
        """Refuse to start (without writing results) when the benchmark cannot run here."""
        if not (self.root / "hafen" / "__init__.py").exists():
            raise SystemExit(f"no hafen package in {self.root}")
        try:
            docker("info", "--format", "{{.Swarm.LocalNodeState}}")
        except RuntimeError as exc:
            raise SystemExit(f"docker does not answer: {exc}") from None
        for port in (self.web_port, self.http_port, self.https_port):
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    raise SystemExit(f"port {port} is in use: another benchmark (or something else) runs; stop it")

    def leftovers(self) -> dict[str, list[str]]:
        """What of this benchmark is still there, by kind."""
        found = {}
        swarm = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "active"
        for kind in ("service", "container", "secret", "volume", "network"):
            if kind in ("service", "secret") and not swarm:  # no swarm yet: `hafen up` turns it on
                continue
            ls = ["ps", "-a", "--format", "{{.Names}}"] if kind == "container" else [kind, "ls", "--format",
                                                                                     "{{.Name}}"]
            names = docker_lines(*ls, "--filter", f"label={self.label}")
            for extra in self.extra_names:  # `name=` matches any part of a name
                names += [n for n in docker_lines(*ls, "--filter", f"name={extra}") if n.startswith(extra)]
            if names:
                found[kind] = sorted(set(names))
        return found

    def sweep(self, problems: list[str]) -> None:
        """Remove what is left of this benchmark (the edge stays after `hafen down`, for one)."""

        def removed_all() -> bool:
            # One round over everything, services first; volumes and networks still busy
            # (their containers are going) fail and come again in the next round.
            left = self.leftovers()
            for kind, names in left.items():
                for name in names:
                    docker(*(["rm", "--force"] if kind == "container" else [kind, "rm"]), name, check=False)
            return not left

        if not wait_until(removed_all, SWEEP_TIMEOUT, 2.0):
            problems.append(f"clean-up: left over after {SWEEP_TIMEOUT}s: {self.leftovers()}")

    def edge_answers(self) -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{self.http_port}/", headers={"Host": "bench-warmup.localhost"}, timeout=5)
        except httpx.HTTPError:
            return False
        return True

    def up(self, report: dict[str, Any]) -> None:
        """Start the control plane and wait until the edge answers."""
        if left := self.leftovers():
            log(f"removing leftovers of an earlier benchmark: {left}")
            report["notes"].append(f"leftovers of an earlier run were removed at the start: {left}")
            self.sweep(report["problems"])
        report["host"]["docker"] = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        report["hafen_version"] = self.hafen("--version", timeout=60).stdout.strip()
        log("starting the control plane (hafen up --detach)")
        started = time.monotonic()
        self.hafen("up", "--detach", timeout=UP_TIMEOUT)
        log(f"control plane up in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        if not wait_until(self.edge_answers, EDGE_TIMEOUT):
            raise RuntimeError(f"the edge proxy did not answer on port {self.http_port} within {EDGE_TIMEOUT:.0f}s")
        report["edge_ready_seconds"] = round(time.monotonic() - started, 3)
        log(f"edge answers after {report['edge_ready_seconds']:.1f}s")

    def down(self, report: dict[str, Any]) -> None:
        """Stop the control plane, remove everything of the benchmark, keep its log if something went wrong."""
        problems: list[str] = report["problems"]
        log("stopping the control plane (hafen down)")
        try:
            self.hafen("down", timeout=DOWN_TIMEOUT)
        except Exception as exc:
            problems.append(f"hafen down: {exc}")
        try:
            self.sweep(problems)
        except Exception as exc:
            problems.append(f"clean-up: {exc}")
        log_file = self.data_dir / "controller.log"
        if problems and log_file.exists():
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            kept = RESULTS_DIR / f"{report['benchmark']}-{report['stamp']}-controller.log"
            shutil.copyfile(log_file, kept)
            report["controller_log"] = str(kept.relative_to(REPO))
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def create(self, name: str, app: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.hafen("create", name, "--app", app, "--json").stdout)
        return data

    def erase(self, name: str) -> tuple[float | None, str]:
        """`hafen erase NAME --yes`, never raising: (its seconds or None, error or "")."""
        started = time.monotonic()
        try:
            self.hafen("erase", name, "--yes", timeout=ERASE_TIMEOUT)
        except Exception as exc:
            if "no instance named" in str(exc):  # a create that failed early
                return None, ""
            log(f"{name}: erase: {exc}")
            return None, str(exc)
        seconds = round(time.monotonic() - started, 3)
        log(f"{name}: erased in {seconds:.2f}s")
        return seconds, ""

    def memory_by_instance(self) -> dict[str, dict[str, float]]:
        """MiB per service of every instance of this plane, from one `docker stats` sample."""
        lines = docker("stats", "--no-stream", "--format", "{{json .}}", timeout=120).stdout.splitlines()
        found: dict[str, dict[str, float]] = {}
        pattern = re.compile(rf"{re.escape(self.prefix)}-(.+)_([a-z0-9-]+)\.\d+\.")
        for row in (json.loads(line) for line in lines if line.strip()):
            if match := pattern.match(row.get("Name", "")):
                services = found.setdefault(match[1], {})
                services[match[2]] = services.get(match[2], 0.0) + to_mib(row["MemUsage"].split("/")[0])
        return found
