"""Benchmark: what the per-instance edge networks cost the edge proxy.

Each instance's web service is on its own internal edge network, and the proxy's
container is attached to every one of them at run time (`docker network connect`).
With N instances of the demo app this measures:

- the time to attach one network to the proxy (the engine call, as the controller
  logs it: "edge: proxy ... attached to ... in S"), median and p90 over all instances;
- the proxy container's memory (its cgroup's usage less inactive file pages, as
  `docker stats` counts it) with no instance and with N;
- request latency of GET /health through the proxy against a direct request to the
  web service, from one client container on the instance's edge network: for each
  sampled instance the same client alternates the two, each on a new connection.

Everything runs under the prefix "isobench" on the ports 39080/39443 (edge) and
39765 (control-plane web), with a fresh temporary data directory, from this
checkout (`python -m hafen`). All objects it makes are removed at the end, also
after errors, Ctrl-C or SIGTERM.

    .venv/bin/python bench/isolation.py [--instances 100] [--parallel 4] [--latency-instances 10]

Results: bench/results/isolation-<UTC timestamp>.json and isolation-latest.json.
Exit status: 0 if everything worked and nothing was left over; 1 on a problem; 130 when interrupted.
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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"

PREFIX = "isobench"
HTTP_PORT = 39080
HTTPS_PORT = 39443
WEB_PORT = 39765
PREFIX_LABEL = f"hafen.prefix={PREFIX}"
CLIENT_IMAGE = "hafen/demo:1.0"
UP_TIMEOUT = 900
CREATE_TIMEOUT = 900
ERASE_TIMEOUT = 300
ATTACH_TIMEOUT = 300
SWEEP_TIMEOUT = 180
IDLE_SECONDS = 10.0
ATTACHED = re.compile(r"edge: proxy (\S+) attached to (\S+) in ([\d.]+)s")

# Runs in the client container: alternately one request through the proxy and one straight to
# the web service, each on a new connection; prints the two lists of seconds as JSON.
CLIENT = r"""
import json, socket, sys, time
proxy, domain, web, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def get(addr, port, host):
    started = time.perf_counter()
    s = socket.create_connection((addr, port), timeout=10)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    assert data.split(b" ", 2)[1] == b"200", data[:100]
    return time.perf_counter() - started
web_ip = socket.gethostbyname(web)
times = {"proxy": [], "direct": []}
for i in range(rounds + 5):
    p, d = get(proxy, 80, domain), get(web_ip, 8000, domain)
    if i >= 5:  # warm-up
        times["proxy"].append(p); times["direct"].append(d)
print(json.dumps(times))
"""


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def hafen(env: dict[str, str], *args: str, timeout: float) -> str:
    proc = subprocess.run([sys.executable, "-m", "hafen", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise RuntimeError(f"hafen {' '.join(args[:2])} exited {proc.returncode}: {lines[-1] if lines else ''}")
    return proc.stdout


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def stats(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any] | None:
    if not values:
        return None
    ordered = sorted(v * scale for v in values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"n": len(ordered), "median": round(statistics.median(ordered), digits), "p90": round(p90, digits),
            "min": round(ordered[0], digits), "max": round(ordered[-1], digits)}


class Bench:
    def __init__(self, args: argparse.Namespace, env: dict[str, str], data_dir: Path, report: dict[str, Any]):
        self.args = args
        self.env = env
        self.data_dir = data_dir
        self.report = report
        self.problems: list[str] = report["problems"]
        self.client = docker.from_env(timeout=120)
        self.names = [f"iso{n:03d}" for n in range(1, args.instances + 1)]

    # -- the swarm ---------------------------------------------------------------------------

    def leftovers(self) -> dict[str, list[str]]:
        api, label = self.client.api, {"label": PREFIX_LABEL}
        found = {
            "services": [s["Spec"]["Name"] for s in api.services(filters=label)],
            "containers": [c["Names"][0] for c in api.containers(all=True, filters=label)],
            "secrets": [s["Spec"]["Name"] for s in api.secrets(filters=label)],
            "volumes": [v["Name"] for v in api.volumes(filters=label).get("Volumes") or []],
            "networks": [n["Name"] for n in api.networks(filters=label)],
        }
        return {kind: sorted(names) for kind, names in found.items() if names}

    def sweep(self) -> None:
        """Remove every object labelled with the benchmark's prefix, services first."""
        api = self.client.api

        def removed_all() -> bool:
            left = self.leftovers()
            for kind, names in left.items():
                for name in names:
                    try:
                        if kind == "services":
                            api.remove_service(name)
                        elif kind == "containers":
                            api.remove_container(name, force=True)
                        elif kind == "secrets":
                            api.remove_secret(name)
                        elif kind == "volumes":
                            api.remove_volume(name, force=True)
                        elif kind == "networks":
                            api.remove_network(name)
                    except docker.errors.APIError:
                        pass  # busy: its containers are going; again in the next round
            return not left

        if not wait_until(removed_all, SWEEP_TIMEOUT, 2.0):
            self.problems.append(f"clean-up: left over after {SWEEP_TIMEOUT}s: {self.leftovers()}")

    def proxy(self) -> Any:
        found = self.client.containers.list(filters={"label": [PREFIX_LABEL, "hafen.role=edge"]})
        if len(found) != 1:
            raise RuntimeError(f"expected one edge proxy container, found {len(found)}")
        return found[0]

    def proxy_memory(self) -> dict[str, Any]:
        """The proxy's cgroup memory as `docker stats` counts it: usage less inactive file pages."""
        time.sleep(IDLE_SECONDS)
        container = self.proxy()
        memory = container.stats(stream=False)["memory_stats"]
        inactive = memory.get("stats", {}).get("total_inactive_file", memory.get("stats", {}).get("inactive_file", 0))
        return {"container": container.id[:12], "usage_mib": round((memory["usage"] - inactive) / 1024**2, 1),
                "rss_mib": round(memory.get("stats", {}).get("total_rss", 0) / 1024**2, 1),
                "networks": len(container.attrs["NetworkSettings"]["Networks"])}

    # -- the steps ---------------------------------------------------------------------------

    def up(self) -> None:
        log("starting the control plane (hafen up --detach)")
        hafen(self.env, "up", "--detach", timeout=UP_TIMEOUT)

        def answers() -> bool:
            try:
                httpx.get(f"http://127.0.0.1:{HTTP_PORT}/", headers={"Host": "warm-up.localhost"}, timeout=5)
            except httpx.HTTPError:
                return False
            return True

        if not wait_until(answers, 120):
            raise RuntimeError(f"the edge proxy did not answer on port {HTTP_PORT}")

    def create_all(self) -> None:
        def create(name: str) -> float:
            started = time.monotonic()
            hafen(self.env, "create", name, "--app", "demo", "--json", timeout=CREATE_TIMEOUT)
            seconds = time.monotonic() - started
            log(f"{name}: created in {seconds:.1f}s")
            return seconds

        started = time.monotonic()
        with ThreadPoolExecutor(self.args.parallel) as pool:
            seconds = list(pool.map(create, self.names))
        self.report["create"] = {"wall_seconds": round(time.monotonic() - started, 1), "each": stats(seconds, 1, 1)}

    def attach_times(self) -> dict[str, Any]:
        """From the controller's log: the attach of each instance's network to the proxy."""
        wanted = {f"{PREFIX}-{name}_edge" for name in self.names}

        def all_attached() -> bool:
            return wanted <= set(self.proxy().attrs["NetworkSettings"]["Networks"])

        if not wait_until(all_attached, ATTACH_TIMEOUT, 2.0):
            self.problems.append("the proxy was not attached to every instance's network in time")
        text = (self.data_dir / "controller.log").read_text(errors="replace")
        seconds = {m[2]: float(m[3]) for m in ATTACHED.finditer(text) if m[2] in wanted}
        if len(seconds) != len(wanted):
            self.problems.append(f"attach times logged for {len(seconds)} of {len(wanted)} networks")
        return {"seconds": stats(list(seconds.values())), "networks": len(seconds)}

    def latency(self) -> dict[str, Any]:
        """The client is a one-replica service on the sampled instances' edge networks, not a
        container connected by hand: the swarm leaks such a container's network attachment now
        and then (moby/moby#31068), and the network can then never be removed."""
        sample = self.names[:: max(1, len(self.names) // self.args.latency_instances)][: self.args.latency_instances]
        networks = [f"{PREFIX}-{name}_edge" for name in sample]
        service = self.client.services.create(
            CLIENT_IMAGE, ["sleep", "infinity"], name=f"{PREFIX}-client", networks=networks,
            labels={"hafen.prefix": PREFIX}, container_labels={"hafen.prefix": PREFIX},
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
        )
        per_instance = {}
        proxy_all: list[float] = []
        direct_all: list[float] = []
        label = {"label": f"com.docker.swarm.service.name={PREFIX}-client"}
        try:
            if not wait_until(lambda: self.client.containers.list(filters=label), 120):
                raise RuntimeError("the latency client did not start")
            client = self.client.containers.list(filters=label)[0]
            proxy = self.proxy()
            for name, network in zip(sample, networks, strict=True):
                proxy_ip = proxy.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
                web = f"{name}.localhost.{PREFIX}-route"
                code, out = client.exec_run(["python3", "-c", CLIENT, proxy_ip, f"{name}.localhost", web,
                                             str(self.args.rounds)])
                if code != 0:
                    raise RuntimeError(f"latency client for {name}: {out.decode(errors='replace')[-300:]}")
                times = json.loads(out)
                proxy_all += times["proxy"]
                direct_all += times["direct"]
                p, d = statistics.median(times["proxy"]), statistics.median(times["direct"])
                per_instance[name] = {"proxy_ms": round(p * 1000, 2), "direct_ms": round(d * 1000, 2),
                                      "ratio": round(p / d, 2)}
                log(f"{name}: through the proxy {p * 1000:.2f} ms, direct {d * 1000:.2f} ms (medians)")
        finally:
            service.remove()
            wait_until(lambda: not self.client.containers.list(all=True, filters=label), 60)
        through, direct = stats(proxy_all, 1000, 2), stats(direct_all, 1000, 2)
        return {"proxy_ms": through, "direct_ms": direct, "rounds": self.args.rounds,
                "ratio": round(through["median"] / direct["median"], 2) if through and direct else None,
                "instances": per_instance}

    def erase_all(self) -> None:
        def erase(name: str) -> None:
            try:
                hafen(self.env, "erase", name, "--yes", timeout=ERASE_TIMEOUT)
            except Exception as exc:
                if "no instance named" not in str(exc):
                    self.problems.append(f"{name}: erase: {exc}")

        log(f"erasing {len(self.names)} instances")
        with ThreadPoolExecutor(self.args.parallel) as pool:
            list(pool.map(erase, self.names))

    def run(self) -> None:
        if left := self.leftovers():
            log(f"removing leftovers of an earlier run: {left}")
            self.report["notes"].append(f"leftovers of an earlier run were removed at the start: {left}")
            self.sweep()
        try:
            self.up()
            self.report["proxy_memory"]["empty"] = self.proxy_memory()
            log(f"proxy memory, no instance: {self.report['proxy_memory']['empty']}")
            self.create_all()
            self.report["attach"] = self.attach_times()
            self.report["proxy_memory"]["full"] = self.proxy_memory()
            log(f"proxy memory, {len(self.names)} instances: {self.report['proxy_memory']['full']}")
            self.report["latency"] = self.latency()
        finally:
            try:
                self.erase_all()
            finally:
                log("stopping the control plane (hafen down)")
                try:
                    hafen(self.env, "down", timeout=60)
                except Exception as exc:
                    self.problems.append(f"hafen down: {exc}")
                self.sweep()


def summary(report: dict[str, Any]) -> str:
    n = report["config"]["instances"]
    lines = [f"Per-instance edge networks, {n} demo instances"]
    attach = (report.get("attach") or {}).get("seconds") or {}
    lines.append(f"  attach a network to the proxy: median {attach.get('median', '-')} s, "
                 f"p90 {attach.get('p90', '-')} s (max {attach.get('max', '-')} s, {attach.get('n', 0)} networks)")
    memory = report["proxy_memory"]
    for key, label in (("empty", "no instance"), ("full", f"{n} instances")):
        if key in memory:
            m = memory[key]
            lines.append(f"  proxy memory with {label}: {m['usage_mib']} MiB ({m['networks']} networks)")
    latency = report.get("latency") or {}
    if latency.get("proxy_ms"):
        p, d = latency["proxy_ms"], latency["direct_ms"]
        lines.append(f"  GET /health through the proxy: median {p['median']} ms, p90 {p['p90']} ms; direct: median "
                     f"{d['median']} ms, p90 {d['p90']} ms; ratio of medians {latency['ratio']} "
                     f"({len(latency['instances'])} instances x {latency['rounds']} rounds, new connection each)")
    create = report.get("create") or {}
    if create:
        lines.append(f"  creating them took {create['wall_seconds']} s with {report['config']['parallel']} in parallel")
    for title, items in (("Notes", report["notes"]), ("Problems", report["problems"])):
        if items:
            lines += [f"{title}:", *(f"  - {item}" for item in items)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100, help="demo instances (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=4, help="creates and erases at a time (default: %(default)s)")
    parser.add_argument("--latency-instances", type=int, default=10,
                        help="instances whose latency is measured (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=50, help="request pairs per instance (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.instances <= 500 or not 1 <= args.parallel <= 32:
        parser.error("--instances must be 1..500 and --parallel 1..32")
    args.latency_instances = max(1, min(args.latency_instances, args.instances))
    for port in (WEB_PORT, HTTP_PORT, HTTPS_PORT):
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is in use: another benchmark (or something else) runs; stop it first")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started_at = datetime.now(UTC)
    report: dict[str, Any] = {
        "benchmark": "isolation", "stamp": f"{started_at:%Y%m%dT%H%M%SZ}",
        "started_at": f"{started_at:%Y-%m-%dT%H:%M:%SZ}",
        "config": {"instances": args.instances, "parallel": args.parallel, "latency_instances": args.latency_instances,
                   "rounds": args.rounds, "prefix": PREFIX, "http_port": HTTP_PORT, "app": "demo", "size": "small"},
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "proxy_memory": {}, "notes": [], "problems": [],
    }
    data_dir = Path(tempfile.mkdtemp(prefix="hafen-bench-iso-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAFEN_")}
    env.update(HAFEN_DATA_DIR=str(data_dir), HAFEN_PREFIX=PREFIX, HAFEN_HTTP_PORT=str(HTTP_PORT),
               HAFEN_HTTPS_PORT=str(HTTPS_PORT), HAFEN_WEB_PORT=str(WEB_PORT))
    interrupted = False
    try:
        Bench(args, env, data_dir, report).run()
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
            kept = RESULTS_DIR / f"isolation-{report['stamp']}-controller.log"
            shutil.copyfile(log_file, kept)
            report["controller_log"] = str(kept.relative_to(REPO))
        shutil.rmtree(data_dir, ignore_errors=True)
        report["finished_at"] = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
        path = RESULTS_DIR / f"isolation-{report['stamp']}.json"
        for target in (path, RESULTS_DIR / "isolation-latest.json"):
            target.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"\nresults: {path.relative_to(REPO)} (also isolation-latest.json)")
    return 130 if interrupted else 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
