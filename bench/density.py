"""Benchmark: how many OpenSlides instances one machine carries when most of them sleep.

A control plane of the benchmark's own, whose instances fall asleep after --idle without a request
(HAFEN_IDLE; deep sleep never, backups off), gets OpenSlides instances (--app) --batch at a time,
--parallel creates at once, until --count or until a create fails or the machine has less than
--reserve GiB of memory available. Then:

1. it waits until at most 10 % of them are awake, keeps those awake (`--idle never`: else they would
   fall asleep while it measures), waits until the controller rests (its /healthz: nothing stirred for
   30 s), and measures the machine at rest for --seconds after --settle seconds: its idle CPU
   (/proc/stat), the CPU of dockerd, containerd, the shims, the instances'
   containers and the controller (in % of one core, as bench/idle.py), the memory in use
   (MemTotal - MemAvailable) and per instance (docker stats), the controller's pass time (its /healthz, ten
   readings), the time of the dashboard (an operator's
   first page, median of 5, over HTTP) and of `hafen list --json`;
2. it wakes --wake instances chosen at random at once: a client each asks its login page through the edge
   until it answers, then logs the admin in over OpenSlides' REST API; the seconds of each, and the CPU
   seconds dockerd, containerd, the shims, the controller and the containers spent meanwhile;
3. --deep of them are given `--deep-sleep 10s`: the memory of an instance in deep sleep.

Goals (issue 10): 100 instances, at most 10 % awake, the machine at least 80 % idle, each of 10 woken at
once answering within 15 s. The benchmark removes everything it made (prefix "bdn", ports
32080/32443/32765), also after errors, Ctrl-C or SIGTERM. It is not part of CI.

    .venv/bin/python -m bench.density [--count 100] [--app openslides] [--batch 10] [--parallel 2]

Results: bench/results/density-<UTC timestamp>.json and density-latest.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.common import BenchPlane, conclude, fmt, log, new_report, stats, table, wait_until
from bench.idle import cpu_seconds_between, cpu_seconds_so_far, create_many, memory_per_instance, sample

PREFIX = "bdn"
HTTP_PORT, HTTPS_PORT, WEB_PORT = 32080, 32443, 32765
GOALS = {"instances": 100, "awake_share": 0.10, "idle_percent": 80.0, "wake_s": 15.0}


def available_gib() -> float:
    text = Path("/proc/meminfo").read_text()
    return int(re.search(r"MemAvailable:\s+(\d+)", text)[1]) / 1024**2  # type: ignore[index]


def used_gib() -> float:
    text = Path("/proc/meminfo").read_text()
    total = int(re.search(r"MemTotal:\s+(\d+)", text)[1])  # type: ignore[index]
    return round((total - int(re.search(r"MemAvailable:\s+(\d+)", text)[1])) / 1024**2, 2)  # type: ignore[index]


class Bench:
    def __init__(self, args: argparse.Namespace, plane: BenchPlane, report: dict[str, Any]) -> None:
        self.args, self.plane, self.report = args, plane, report
        self.names: list[str] = []

    def states(self) -> dict[str, str]:
        rows = json.loads(self.plane.hafen("list", "--json", timeout=120).stdout)
        return {row["name"]: row["state"] for row in rows}

    def rested(self, timeout: float = 600) -> float | None:
        """Seconds until the controller says it rests (no operation, request or change for a while)."""
        started = time.monotonic()
        if not wait_until(lambda: httpx.get(f"http://127.0.0.1:{WEB_PORT}/healthz", timeout=30)
                          .json()["controller"].get("resting"), timeout, 2):
            return None
        return round(time.monotonic() - started, 1)

    def pass_seconds(self, readings: int = 10, interval: float = 2.0) -> dict[str, Any]:
        """The controller's last pass time as its health endpoint says, read `readings` times."""
        seen = []
        for _ in range(readings):
            health = httpx.get(f"http://127.0.0.1:{WEB_PORT}/healthz", timeout=30).json()
            seen.append(health["controller"]["pass_seconds"])
            time.sleep(interval)
        return stats(seen)

    def dashboard_seconds(self) -> dict[str, Any]:
        """An operator's first page of the dashboard, over HTTP, median of 5 (and `hafen list --json`)."""
        out = self.plane.hafen("user", "add-operator", "benchop", timeout=60).stdout
        password = out.strip().split()[-1]
        with httpx.Client(base_url=f"http://127.0.0.1:{WEB_PORT}", timeout=60, follow_redirects=True) as web:
            page = web.get("/login").text
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]  # type: ignore[index]
            web.post("/login", data={"username": "benchop", "password": password, "csrfmiddlewaretoken": token},
                     headers={"Referer": f"http://127.0.0.1:{WEB_PORT}/login"})
            times = []
            for _ in range(5):
                started = time.monotonic()
                response = web.get("/")
                times.append(time.monotonic() - started)
                if response.status_code != 200 or "benchop" not in response.text:
                    raise RuntimeError(f"the dashboard answered {response.status_code}")
        cli = []
        for _ in range(3):
            started = time.monotonic()
            self.states()
            cli.append(time.monotonic() - started)
        return {"dashboard": stats(times), "hafen_list": stats(cli)}

    def wake_one(self, name: str, password: str) -> dict[str, Any]:
        started = time.monotonic()
        with httpx.Client(base_url=f"http://127.0.0.1:{HTTP_PORT}", headers={"Host": f"{name}.localhost"},
                          timeout=30) as client:
            while time.monotonic() - started < 120:
                try:
                    if client.get("/").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            answered = time.monotonic() - started
            client.get("/apps/users/whoami/")
            token = client.cookies.get("OpenSlidesCsrfToken")
            login = client.post("/apps/users/login/", json={"username": "admin", "password": password},
                                headers={"X-CSRFToken": token} if token else {})
        return {"instance": name, "answered_s": round(answered, 2), "login_status": login.status_code,
                "logged_in_s": round(time.monotonic() - started, 2)}

    def body(self) -> None:
        args, report = self.args, self.report
        self.plane.env.update(HAFEN_IDLE=args.idle, HAFEN_DEEP_SLEEP="never")
        self.plane.up(report)
        try:
            self.plane.hafen("backup-policy", "--disable", timeout=60)
            while len(self.names) < args.count:
                if available_gib() < args.reserve:
                    report["notes"].append(f"stopped at {len(self.names)}: less than {args.reserve} GiB available")
                    break
                batch = [f"dn{n:03d}" for n in range(len(self.names) + 1,
                                                     min(args.count, len(self.names) + args.batch) + 1)]
                started = time.monotonic()
                made = create_many(self.plane, args.app, batch, args.parallel, report["problems"])
                self.names += made
                log(f"{len(self.names)} instances ({time.monotonic() - started:.0f}s for {len(made)}); "
                    f"{available_gib():.1f} GiB available")
                report.setdefault("creates", []).append({"instances": len(self.names),
                                                         "seconds": round(time.monotonic() - started, 1),
                                                         "available_gib": round(available_gib(), 2)})
                if len(made) < len(batch):
                    report["notes"].append(f"stopped at {len(self.names)}: a create failed")
                    break
            report["instances"] = len(self.names)

            def mostly_asleep() -> bool:
                states = self.states()
                awake = sum(1 for n in self.names if states.get(n) != "sleeping")
                return awake <= len(self.names) * GOALS["awake_share"]

            wait_until(mostly_asleep, 600, 5)
            states = self.states()
            awake = [n for n in self.names if states.get(n) != "sleeping"]
            for name in awake:
                self.plane.hafen("policy", name, "--idle", "never", timeout=60)
            report["awake"] = len(awake)
            report["rested_after_s"] = self.rested()
            log(f"{report['awake']} of {len(self.names)} awake; the controller rests after "
                f"{report['rested_after_s']}s; settling {args.settle:.0f}s")
            time.sleep(args.settle)
            report["at_rest"] = sample(self.plane, args.seconds)
            report["memory_used_gib"] = used_gib()
            asleep = [n for n in self.names if states.get(n) == "sleeping"]
            report["memory_asleep"] = memory_per_instance(self.plane, asleep)
            report["control_plane"] = self.dashboard_seconds()
            report["control_plane"]["pass_s"] = self.pass_seconds()
            log(f"at rest: {report['at_rest']['idle_percent']}% idle, {report['memory_used_gib']} GiB used")

            chosen = random.Random(args.seed).sample(asleep, min(args.wake, len(asleep)))
            passwords = {n: json.loads(self.plane.hafen("credentials", n, "--json", timeout=60).stdout)["password"]
                         for n in chosen}
            gate = threading.Barrier(len(chosen))

            def woken(name: str) -> dict[str, Any]:
                gate.wait()
                return self.wake_one(name, passwords[name])

            before, started = cpu_seconds_so_far(self.plane), time.monotonic()
            with ThreadPoolExecutor(len(chosen)) as pool:
                report["wakes"] = list(pool.map(woken, chosen))
            # where the cores went while they woke (the machine has two): which part a cheaper start must cut
            report["wake_cpu_seconds"] = {"wall": round(time.monotonic() - started, 1),
                                          **cpu_seconds_between(before, cpu_seconds_so_far(self.plane))}
            report["wake_s"] = stats([w["answered_s"] for w in report["wakes"]])
            report["memory_awake"] = memory_per_instance(self.plane, chosen)
            log(f"woke {len(chosen)} at once: {report['wake_s']}")

            deep = [n for n in asleep if n not in chosen][:args.deep]
            for name in deep:
                self.plane.hafen("policy", name, "--deep-sleep", "10s", timeout=60)
            wait_until(lambda: all(self.states().get(n) == "sleeping" for n in deep), 300, 5)
            time.sleep(30)
            report["memory_deep"] = memory_per_instance(self.plane, deep, absent_is_zero=True)
        finally:
            log(f"erasing {len(self.names)} instances")
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(self.plane.erase, self.names))
            self.plane.down(report)


def summary(report: dict[str, Any]) -> str:
    rest = report.get("at_rest") or {}
    use = rest.get("cpu_percent_of_a_core", {})
    control = report.get("control_plane") or {}
    rows = [
        ["instances", str(report.get("instances", "-")), str(GOALS["instances"])],
        ["awake at rest", str(report.get("awake", "-")), f"<= {GOALS['awake_share']:.0%}"],
        ["machine idle %", fmt(rest.get("idle_percent"), 1), f">= {GOALS['idle_percent']:.0f}"],
        ["memory used GiB", fmt(report.get("memory_used_gib")), "-"],
        ["MiB per instance asleep", fmt((report.get("memory_asleep") or {}).get("median_mib"), 1), "-"],
        ["MiB per instance awake", fmt((report.get("memory_awake") or {}).get("median_mib"), 1), "-"],
        ["MiB per instance deep", fmt((report.get("memory_deep") or {}).get("median_mib"), 1), "-"],
        ["wake of 10 at once, median s", fmt((report.get("wake_s") or {}).get("median")), "-"],
        ["wake of 10 at once, max s", fmt((report.get("wake_s") or {}).get("max")), f"<= {GOALS['wake_s']:.0f}"],
        ["CPU s while 10 woke: containers", fmt((report.get("wake_cpu_seconds") or {}).get("containers"), 1), "-"],
        ["CPU s while 10 woke: dockerd", fmt((report.get("wake_cpu_seconds") or {}).get("dockerd"), 1), "-"],
        ["controller % of a core", fmt(use.get("controller"), 1), "-"],
        ["dockerd % of a core", fmt(use.get("dockerd"), 1), "-"],
        ["containers % of a core", fmt(use.get("containers"), 1), "-"],
        ["controller pass s (median of 10)", fmt((control.get("pass_s") or {}).get("median"), 3), "-"],
        ["dashboard s (median of 5)", fmt((control.get("dashboard") or {}).get("median"), 3), "-"],
        ["hafen list --json s", fmt((control.get("hafen_list") or {}).get("median"), 2), "-"],
    ]
    lines = ["density: OpenSlides instances on this machine, most asleep",
             *table(["figure", "value", "goal"], rows, [30, 10, 8])]
    lines += [f"note: {n}" for n in report["notes"]] + [f"problem: {p}" for p in report["problems"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--app", choices=("openslides", "demo"), default="openslides")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--idle", default="60s", help="the instances' idle time (default: 60s)")
    parser.add_argument("--reserve", type=float, default=2.0, help="GiB of memory to leave (default: 2)")
    parser.add_argument("--wake", type=int, default=10)
    parser.add_argument("--deep", type=int, default=5)
    parser.add_argument("--settle", type=float, default=45.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 500 or not 1 <= args.parallel <= 8 or not 1 <= args.wake <= 50:
        parser.error("--count 1-500, --parallel 1-8, --wake 1-50")
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT)
    plane.preflight()
    report = new_report("density", **vars(args), goals=GOALS, prefix=PREFIX)
    return conclude(report, Bench(args, plane, report).body, summary)


if __name__ == "__main__":
    sys.exit(main())
