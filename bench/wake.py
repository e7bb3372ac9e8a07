"""Benchmark: how long a sleeping instance takes to answer the request that wakes it.

Per app (--app demo|openslides|both), one instance of the benchmark's own, with its policy set to fall
asleep after 10 s without a request:

- sleep (light): `--idle 10s --deep-sleep never`: the web service goes to zero, the database and cache run;
- deep sleep: `--idle 10s --deep-sleep 10s`: every service goes to zero (backups are off in this plane, so
  deep sleep does not wait for one).

Each run waits until the instance sleeps as asked (`hafen show --json`: its sleep level, and no task of the
services that level stops), then a client asks the login page (`GET /`, the instance's Host header,
through the edge on loopback) as a person's browser would: the first request sees the waking page and
wakes the instance, and the client asks again every 0.1 s (a page that reloads itself, faster than the
page's own 2 s) until the app answers 200. The figure is the time from the first request to the end of
that 200 answer (the login page is a few kB: its first byte), median (min, max) of --runs runs per app and
level; the answers before it are counted (none may be an error page of the proxy: 502 or 504).

Where the time goes, per run (seconds after the first request, medians in the summary): the wake operation
queued (the controller's decision) and its services deployed (`hafen show --json`), and, from Docker's
events of the instance's containers, each service's container started and healthy.

Goals (issue 10): OpenSlides from sleep <= 5 s, from deep sleep <= 10 s; the demo app <= 2 s.

Everything runs under the prefix "bwk" on the ports 34080/34443 (edge) and 34765 (control-plane web);
all objects it makes carry the label hafen.prefix=bwk and are removed at the end, also after errors,
Ctrl-C or SIGTERM.

    .venv/bin/python -m bench.wake [--runs 5] [--app demo|openslides|both]

Results: bench/results/wake-<UTC timestamp>.json and wake-latest.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections import Counter
from datetime import datetime
from typing import Any

import docker
import httpx

from bench.common import BenchPlane, conclude, fmt, log, new_report, stats, table, wait_until

PREFIX = "bwk"
HTTP_PORT, HTTPS_PORT, WEB_PORT = 34080, 34443, 34765
IDLE = "10s"
ASLEEP_TIMEOUT = 120.0
WAKE_TIMEOUT = 120.0
POLL = 0.1
GOALS = {"demo": {"light": 2.0, "deep": 2.0}, "openslides": {"light": 5.0, "deep": 10.0}}
LEVELS = {"light": ("never", ("web",)), "deep": (IDLE, ("web", "db", "redis"))}


class Bench:
    def __init__(self, args: argparse.Namespace, plane: BenchPlane, report: dict[str, Any]) -> None:
        self.args, self.plane, self.report = args, plane, report

    def show(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.plane.hafen("show", name, "--json", timeout=60).stdout)
        return data

    def asleep(self, name: str, level: str) -> bool:
        data = self.show(name)
        stopped = LEVELS[level][1]
        return data["state"] == "sleeping" and data["elastic"]["sleep"] == level and all(
            data["services"].get(svc, {}).get("running", 0) == 0 for svc in stopped)

    def phases(self, name: str, began: float) -> dict[str, float]:
        """Seconds after `began` (epoch): the wake decided and deployed, each container started and healthy."""
        found: dict[str, float] = {}
        wake = next((op for op in self.show(name)["operations"] if op["kind"] == "wake"), None)
        if wake is not None:
            found["decided"] = datetime.fromisoformat(wake["created_at"]).timestamp() - began
            deploy = next((step for step in wake["steps"] if step["name"].startswith("deploy:")), None)
            if deploy and deploy.get("finished_at"):
                found["deployed"] = datetime.fromisoformat(deploy["finished_at"]).timestamp() - began
        client = docker.from_env()
        try:
            for event in client.events(since=int(began) - 1, until=int(time.time()) + 1, decode=True,
                                       filters={"type": ["container"], "label": [f"hafen.instance={name}"],
                                                "event": ["start", "health_status"]}):
                service = event["Actor"]["Attributes"].get("hafen.service", "?")
                at = event["timeNano"] / 1e9 - began
                what = "started" if event["Action"] == "start" else event["Action"].split(": ")[-1]
                key = f"{service}_{what}"
                if at > 0 and key not in found:
                    found[key] = at
        finally:
            client.close()
        return {key: round(value, 3) for key, value in sorted(found.items(), key=lambda kv: kv[1])}

    def wake(self, name: str) -> dict[str, Any]:
        seen: Counter[int] = Counter()
        with httpx.Client(base_url=f"http://127.0.0.1:{HTTP_PORT}", headers={"Host": f"{name}.localhost",
                                                                             "Accept": "text/html"},
                          timeout=30) as client:
            started, began = time.monotonic(), time.time()
            while time.monotonic() - started < WAKE_TIMEOUT:
                try:
                    response = client.get("/")
                except httpx.HTTPError as exc:
                    seen[0] += 1
                    log(f"{name}: {type(exc).__name__}")
                    time.sleep(POLL)
                    continue
                if response.status_code == 200:
                    return {"seconds": round(time.monotonic() - started, 3), "answers_before": dict(seen),
                            "phases": self.phases(name, began)}
                seen[response.status_code] += 1
                time.sleep(POLL)
        raise RuntimeError(f"{name} did not answer within {WAKE_TIMEOUT:.0f}s: {dict(seen)}")

    def one_app(self, app: str) -> None:
        name = f"wake{app[:4]}"
        figures: dict[str, Any] = {}
        log(f"{name}: creating ({app})")
        self.plane.create(name, app)
        try:
            for level, (deep, _) in LEVELS.items():
                self.plane.hafen("policy", name, "--idle", IDLE, "--deep-sleep", deep, timeout=60)
                runs = []
                for run in range(1, self.args.runs + 1):
                    started = time.monotonic()
                    if not wait_until(functools.partial(self.asleep, name, level), ASLEEP_TIMEOUT, 0.5):
                        raise RuntimeError(f"{name} did not fall into {level} sleep within {ASLEEP_TIMEOUT:.0f}s")
                    fell = round(time.monotonic() - started, 1)
                    result = self.wake(name)
                    proxy_errors = sum(n for code, n in result["answers_before"].items() if code in (0, 502, 504))
                    if proxy_errors:
                        self.report["problems"].append(f"{app} {level} run {run}: {result['answers_before']}")
                    log(f"{name}: {level} run {run}: asleep after {fell}s, answered {result['seconds']:.2f}s "
                        f"after the first request ({result['answers_before']})")
                    runs.append({**result, "fell_asleep_after_s": fell})
                phases = sorted({key for r in runs for key in r["phases"]})
                figures[level] = {"runs": runs, "seconds": stats([r["seconds"] for r in runs]),
                                  "goal_s": GOALS[app][level],
                                  "phases_median_s": {key: statistics.median(r["phases"][key] for r in runs
                                                                             if key in r["phases"]) for key in phases}}
        finally:
            self.plane.hafen("policy", name, "--idle", "never", timeout=60, check=False)
            self.plane.erase(name)
        self.report["figures"][app] = figures

    def body(self) -> None:
        self.plane.up(self.report)
        try:
            self.plane.hafen("backup-policy", "--disable", timeout=60)
            for app in (("demo", "openslides") if self.args.app == "both" else (self.args.app,)):
                self.one_app(app)
        finally:
            self.plane.down(self.report)


def summary(report: dict[str, Any]) -> str:
    rows = []
    for app, levels in report["figures"].items():
        for level, figure in levels.items():
            s = figure["seconds"] or {}
            rows.append([app, level, fmt(s.get("median")), fmt(s.get("min")), fmt(s.get("max")),
                         fmt(figure["goal_s"], 1), str(len(figure["runs"]))])
    lines = ["wake: first request to the login page's answer, seconds",
             *table(["app", "sleep", "median", "min", "max", "goal", "runs"], rows, [11, 6, 7, 7, 7, 5, 4], left=2)]
    for app, levels in report["figures"].items():
        for level, figure in levels.items():
            steps = sorted((figure.get("phases_median_s") or {}).items(), key=lambda kv: kv[1] or 0)
            lines.append(f"  {app} {level}, medians: " + ", ".join(f"{key} {fmt(value)}" for key, value in steps))
    lines += [f"problem: {p}" for p in report["problems"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="wakes per app and sleep level (default: 5)")
    parser.add_argument("--app", choices=("demo", "openslides", "both"), default="both")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be between 1 and 20")
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT)
    plane.preflight()
    report = new_report("wake", runs=args.runs, app=args.app, idle=IDLE, poll=POLL, goals=GOALS, prefix=PREFIX,
                        http_port=HTTP_PORT)
    report["figures"] = {}
    return conclude(report, Bench(args, plane, report).body, summary)


if __name__ == "__main__":
    sys.exit(main())
