"""Benchmark: autoscaling on live load: how soon a new web replica serves after the load begins, whether the
replicas flap, and how long they take to come back to the minimum after it ends.

Per app (--app demo|openslides|both), one instance of the benchmark's own with the policy
`--min 1 --max 4 --target-inflight 4 --idle never`. A bounded load generator on loopback (--clients
threads, each one keep-alive connection through the edge with the instance's Host header, one request
after the other: a closed loop, so about --clients requests are open at the edge at any time) asks the
app's login page (`GET /`) in three phases: --calm seconds without load, --load seconds of load, then
calm again until the web service is back at one replica (at most --tail seconds). Every second it
records the requests answered (and failed) and the running web tasks (the swarm's, by the Docker API).

Figures, per app: seconds from the onset of the load to the first answer of a second replica (demo: its
page names the container that answered; OpenSlides: the first second a second task runs and answers
come in), the replicas reached, the scale-ups, the scale-downs while the load held (goal 0) and after it
ended (goal at most 1), and seconds from the end of the load to one replica again (the stabilisation
window is 300 s). Goals (issue 10): the new replica serving <= 20 s after the onset.

The run is plotted, replicas and requests per second over time, as a PNG beside the JSON (matplotlib,
from the `bench` extra: `.venv/bin/pip install -e .[bench]`).

Everything runs under the prefix "bas" on the ports 33080/33443 (edge) and 33765 (control-plane web);
all objects it makes carry the label hafen.prefix=bas and are removed at the end, also after errors,
Ctrl-C or SIGTERM.

    .venv/bin/python -m bench.autoscale [--app demo|openslides|both] [--clients 12] [--calm 20] [--load 120]

Results: bench/results/autoscale-<UTC timestamp>.json and .png, and autoscale-latest.json.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from typing import Any

import docker
import httpx

from bench.common import RESULTS_DIR, BenchPlane, conclude, fmt, log, new_report, table

PREFIX = "bas"
HTTP_PORT, HTTPS_PORT, WEB_PORT = 33080, 33443, 33765
POLICY = ("--min", "1", "--max", "4", "--target-inflight", "4", "--idle", "never")
GOAL_NEW_REPLICA_S = 20.0


class Load:
    """--clients threads asking GET / in a closed loop while `on` is set; per second: answers, failures,
    and which containers answered (the demo app's page names its host)."""

    def __init__(self, domain: str, clients: int) -> None:
        self.domain, self.clients = domain, clients
        self.on = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answered: Counter[int] = Counter()
        self.failed: Counter[int] = Counter()
        self.statuses: Counter[str] = Counter()  # of the failed requests: HTTP status, or the error's name
        self.hosts: dict[str, float] = {}  # the page's container name: when it first answered
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{HTTP_PORT}", headers={"Host": self.domain},
                          timeout=30) as client:
            while not self.stop.is_set():
                if not self.on.wait(0.2):
                    continue
                second = int(time.monotonic() - self.started)
                try:
                    response = client.get("/")
                    good, status = response.status_code == 200, str(response.status_code)
                except httpx.HTTPError as exc:
                    good, response, status = False, None, type(exc).__name__
                with self.lock:
                    (self.answered if good else self.failed)[second] += 1
                    if not good:
                        self.statuses[status] += 1
                    if good and response is not None and "<p>" in response.text:
                        host = response.text.rsplit("<p>", 1)[1].split("</p>")[0]
                        self.hosts.setdefault(host, time.monotonic() - self.started)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        self.stop.set()
        self.on.clear()
        for thread in self.threads:
            thread.join(timeout=35)


class Bench:
    def __init__(self, args: argparse.Namespace, plane: BenchPlane, report: dict[str, Any]) -> None:
        self.args, self.plane, self.report = args, plane, report
        self.docker = docker.from_env(timeout=60)

    def running(self, name: str) -> tuple[int, int]:
        """The web tasks that run and are meant to (the service's replicas), and those that run on their way
        out (a task being replaced: a change of the service's replicas rolls its tasks over, see README)."""
        service = self.docker.services.get(f"{PREFIX}-{name}_web")
        tasks = [t for t in service.tasks() if t["Status"]["State"] == "running"]
        meant = sum(1 for t in tasks if t.get("DesiredState") == "running")
        return meant, len(tasks) - meant

    def one_app(self, app: str) -> None:
        name = f"as{app[:4]}"
        log(f"{name}: creating ({app})")
        self.plane.create(name, app)
        load = Load(f"{name}.localhost", self.args.clients)
        timeline: list[dict[str, Any]] = []
        try:
            self.plane.hafen("policy", name, *POLICY, timeout=60)
            load.start()
            phase, load_start, load_end = "calm", 0.0, 0.0
            while True:
                now = time.monotonic() - load.started
                if phase == "calm" and now >= self.args.calm:
                    phase, load_start = "load", now
                    load.on.set()
                    log(f"{name}: load on ({self.args.clients} clients)")
                elif phase == "load" and now >= load_start + self.args.load:
                    phase, load_end = "after", now
                    load.on.clear()
                    log(f"{name}: load off")
                replicas, leaving = self.running(name)
                timeline.append({"t": round(now, 1), "phase": phase, "replicas": replicas, "leaving": leaving})
                if phase == "after" and (replicas <= 1 or now > load_end + self.args.tail):
                    break
                time.sleep(1.0)
        finally:
            load.close()
            self.plane.erase(name)
        for point in timeline:
            second = int(point["t"])
            point["answered"], point["failed"] = load.answered.get(second, 0), load.failed.get(second, 0)
        self.report["figures"][app] = self.figures(timeline, load, load_start, load_end)
        self.report["timelines"][app] = timeline

    @staticmethod
    def figures(timeline: list[dict[str, Any]], load: Load, load_start: float, load_end: float) -> dict[str, Any]:
        replicas = [p["replicas"] for p in timeline]
        steps = [(timeline[i]["t"], replicas[i - 1], replicas[i]) for i in range(1, len(replicas))
                 if replicas[i] != replicas[i - 1]]
        during = [s for s in steps if load_start <= s[0] < load_end]
        after = [s for s in steps if s[0] >= load_end]
        second_host = sorted(load.hosts.values())[1] if len(load.hosts) > 1 else None
        first_second = next((p["t"] for p in timeline if p["t"] >= load_start and p["replicas"] > 1
                             and p["answered"]), None)
        new_replica = second_host if second_host is not None else first_second
        back = next((p["t"] for p in timeline if p["t"] >= load_end and p["replicas"] <= 1), None)
        return {
            "new_replica_serving_s": round(new_replica - load_start, 1) if new_replica is not None else None,
            "by": "the page's container" if second_host is not None else "tasks running",
            "max_replicas": max(replicas), "scale_ups": sum(1 for s in steps if s[2] > s[1]),
            "scale_downs_under_load": sum(1 for s in during if s[2] < s[1]),
            "scale_downs_after": sum(1 for s in after if s[2] < s[1]),
            "back_to_min_s": round(back - load_end, 1) if back is not None else None,
            "failed_requests": sum(p["failed"] for p in timeline),
            "failed_by_status": dict(load.statuses),
            "most_leaving": max(p["leaving"] for p in timeline),
            "answered_requests": sum(p["answered"] for p in timeline),
            "goal_new_replica_s": GOAL_NEW_REPLICA_S,
        }

    def plot(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.report["notes"].append("no plot: matplotlib is missing (pip install -e .[bench])")
            return
        apps = list(self.report["timelines"])
        if not apps:
            return
        figure, axes = plt.subplots(len(apps), 1, figsize=(10, 3.2 * len(apps)), squeeze=False)
        for row, app in zip(axes, apps, strict=True):
            points = self.report["timelines"][app]
            t = [p["t"] for p in points]
            ax = row[0]
            ax.step(t, [p["replicas"] for p in points], where="post", color="tab:blue", label="web replicas running")
            ax.set_ylabel("replicas")
            ax.set_ylim(0, 5)
            ax.set_title(f"{app}: {self.args.clients} clients for {self.args.load:.0f} s")
            other = ax.twinx()
            other.plot(t, [p["answered"] for p in points], color="tab:orange", alpha=0.7, label="answers per second")
            other.set_ylabel("answers per second")
            ax.set_xlabel("seconds")
            lines = ax.get_legend_handles_labels()[0] + other.get_legend_handles_labels()[0]
            ax.legend(lines, [str(line.get_label()) for line in lines], loc="upper right")
        figure.tight_layout()
        path = RESULTS_DIR / f"autoscale-{self.report['stamp']}.png"
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        self.report["plot"] = f"bench/results/{path.name}"

    def body(self) -> None:
        self.plane.up(self.report)
        try:
            for app in (("demo", "openslides") if self.args.app == "both" else (self.args.app,)):
                self.one_app(app)
        finally:
            self.plane.down(self.report)
            self.plot()


def summary(report: dict[str, Any]) -> str:
    rows = [[app, fmt(f["new_replica_serving_s"], 1), str(f["max_replicas"]), str(f["scale_ups"]),
             str(f["scale_downs_under_load"]), str(f["scale_downs_after"]), fmt(f["back_to_min_s"], 0),
             str(f["failed_requests"])] for app, f in report["figures"].items()]
    lines = ["autoscale: new replica serving after the onset (goal <= 20 s), flapping (goals 0 and <= 1)",
             *table(["app", "new (s)", "max", "ups", "downs@load", "downs after", "to min (s)", "failed"], rows,
                    [11, 8, 4, 4, 10, 11, 10, 6])]
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    lines += [f"problem: {p}" for p in report["problems"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", choices=("demo", "openslides", "both"), default="both")
    parser.add_argument("--clients", type=int, default=12, help="concurrent clients of the load (default: 12)")
    parser.add_argument("--calm", type=float, default=20.0, help="seconds without load first (default: 20)")
    parser.add_argument("--load", type=float, default=120.0, help="seconds of load (default: 120)")
    parser.add_argument("--tail", type=float, default=420.0,
                        help="seconds at most after the load to wait for one replica (default: 420)")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 5 <= args.load <= 1800 or not 0 <= args.calm <= 600:
        parser.error("--clients 1-64, --load 5-1800, --calm 0-600")
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT)
    plane.preflight()
    report = new_report("autoscale", app=args.app, clients=args.clients, calm=args.calm, load=args.load,
                        tail=args.tail, policy=list(POLICY), prefix=PREFIX, http_port=HTTP_PORT)
    report.update(figures={}, timelines={})
    return conclude(report, Bench(args, plane, report).body, summary)


if __name__ == "__main__":
    sys.exit(main())
