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

Everything runs under the prefix "isobench" on the ports 36080/36443 (edge) and
36765 (control-plane web), with a fresh temporary data directory, from this
checkout (`python -m hafen`). All objects it makes are removed at the end, also
after errors, Ctrl-C or SIGTERM.

    .venv/bin/python -m bench.isolation [--instances 100] [--parallel 4] [--latency-instances 10]

Results: bench/results/isolation-<UTC timestamp>.json and isolation-latest.json.
Exit status: 0 if everything worked and nothing was left over; 1 on a problem; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker

from bench.common import BenchPlane, conclude, log, new_report, stats, wait_until

PREFIX = "isobench"
HTTP_PORT = 36080
HTTPS_PORT = 36443
WEB_PORT = 36765
PREFIX_LABEL = f"hafen.prefix={PREFIX}"
CLIENT_IMAGE = "hafen/demo:1.0"
ATTACH_TIMEOUT = 300
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


class Bench:
    def __init__(self, args: argparse.Namespace, plane: BenchPlane, report: dict[str, Any]):
        self.args = args
        self.plane = plane
        self.report = report
        self.problems: list[str] = report["problems"]
        self.client = docker.from_env(timeout=120)
        self.names = [f"iso{n:03d}" for n in range(1, args.instances + 1)]

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

    def create_all(self) -> None:
        def create(name: str) -> float:
            started = time.monotonic()
            self.plane.create(name, "demo")
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
        text = (self.plane.data_dir / "controller.log").read_text(errors="replace")
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
        log(f"erasing {len(self.names)} instances")
        with ThreadPoolExecutor(self.args.parallel) as pool:
            for error in pool.map(lambda name: self.plane.erase(name)[1], self.names):
                if error:
                    self.problems.append(f"erase: {error}")

    def run(self) -> None:
        try:
            self.plane.up(self.report)
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
                self.plane.down(self.report)


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
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT)
    plane.preflight()
    report = new_report("isolation", instances=args.instances, parallel=args.parallel,
                        latency_instances=args.latency_instances, rounds=args.rounds, prefix=PREFIX,
                        http_port=HTTP_PORT, app="demo", size="small")
    report["proxy_memory"] = {}
    return conclude(report, lambda: Bench(args, plane, report).run(), summary)


if __name__ == "__main__":
    sys.exit(main())
