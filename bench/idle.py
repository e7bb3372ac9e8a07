"""Benchmark: what idle instances cost the machine at rest.

With the control plane running and no instance, then with N idle instances
(default 10 and 20 OpenSlides instances; `--max` keeps adding `--step` more
while the machine stays at least `--stop-below` percent idle), the machine is
sampled for `--seconds` at rest: the share of CPU time busy (from /proc/stat),
the load average, the CPU used by dockerd, containerd, the containerd shims, the
instances' containers (their cgroups) and the controller, and the memory of
each instance (docker stats). Every figure is reported beside the same figure
with no instance, measured in the same run.

Runs under the prefix "benchi" on the ports 39080/39443 (edge) and 39765 (web):

    .venv/bin/python -m bench.idle [--app openslides] [--counts 10,20] [--max 40] [--seconds 60]

Results: bench/results/idle-<UTC timestamp>.json and idle-latest.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import BenchPlane, conclude, docker_lines, fmt, log, new_report, table

PREFIX = "benchi"
HTTP_PORT, HTTPS_PORT, WEB_PORT = 39080, 39443, 39765
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPUACCT = Path("/sys/fs/cgroup/cpuacct/docker")
PROCESSES = ("dockerd", "containerd", "containerd-shim")


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def process_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user and system) used so far by each group of processes."""
    used: dict[str, float] = {}
    for group, members in pids.items():
        total = 0
        for pid in members:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            total += int(fields[11]) + int(fields[12])
        used[group] = total / CLOCK_TICKS
    return used


def processes(plane: BenchPlane) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {name: [] for name in PROCESSES}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm in found:
                found[comm].append(int(entry.name))
    pid_file = plane.data_dir / "controller.pid"
    found["controller"] = [int(pid_file.read_text())] if pid_file.exists() else []
    return found


def container_seconds(ids: list[str]) -> float:
    """CPU seconds used so far by these containers (cgroup v1 cpuacct, cgroupfs driver)."""
    total = 0
    for cid in ids:
        try:
            total += int((CPUACCT / cid / "cpuacct.usage").read_text())
        except FileNotFoundError:
            continue
    return total / 1e9


def sample(plane: BenchPlane, seconds: float) -> dict[str, Any]:
    """The machine at rest for `seconds`: busy share, load, CPU per consumer."""
    pids = processes(plane)
    containers = docker_lines("ps", "-q", "--no-trunc", "--filter", f"label={plane.label}",
                              "--filter", "label=hafen.instance")
    busy0, total0 = cpu_times()
    procs0, cont0 = process_seconds(pids), container_seconds(containers)
    started = time.monotonic()
    loads = []
    while (elapsed := time.monotonic() - started) < seconds:
        time.sleep(min(5.0, seconds - elapsed))
        loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
    wall = time.monotonic() - started
    busy1, total1 = cpu_times()
    procs1, cont1 = process_seconds(pids), container_seconds(containers)
    cores = os.cpu_count() or 1
    consumers = {name: round(100 * (procs1[name] - procs0[name]) / wall, 2) for name in procs0}
    consumers["containers"] = round(100 * (cont1 - cont0) / wall, 2)
    return {
        "seconds": round(wall, 1),
        "busy_percent": round(100 * (busy1 - busy0) / (total1 - total0), 1),
        "idle_percent": round(100 - 100 * (busy1 - busy0) / (total1 - total0), 1),
        "load_average_1m": {"mean": round(statistics.mean(loads), 2), "last": loads[-1]},
        # percent of one core; the machine has `cores` of them
        "cpu_percent_of_a_core": consumers,
        "cores": cores,
        "containers": len(containers),
    }


def create_many(plane: BenchPlane, app: str, names: list[str], parallel: int, problems: list[str]) -> list[str]:
    """Create instances, `parallel` at a time; return the names that run."""
    def one(name: str) -> str | None:
        try:
            started = time.monotonic()
            plane.create(name, app)
            log(f"{name}: running after {time.monotonic() - started:.1f}s")
            return name
        except Exception as exc:
            problems.append(f"{name}: create: {exc}")
            log(f"{name}: {exc}")
            return None

    with ThreadPoolExecutor(parallel) as pool:
        return [name for name in pool.map(one, names) if name]


def cpu_seconds_so_far(plane: BenchPlane) -> dict[str, float]:
    """CPU seconds used so far by each process group, and by each container of the plane's instances (by id)."""
    used = {f"process:{group}": seconds for group, seconds in process_seconds(processes(plane)).items()}
    for cid in docker_lines("ps", "-q", "--no-trunc", "--filter", f"label={plane.label}",
                            "--filter", "label=hafen.instance"):
        used[f"container:{cid}"] = container_seconds([cid])
    return used


def cpu_seconds_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Seconds of CPU per process group and of the instances' containers between two readings (a process or
    container that started in between counts whole; one that ended in between is missed)."""
    spent: dict[str, float] = {"containers": 0.0}
    for key, seconds in after.items():
        delta = max(0.0, seconds - before.get(key, 0.0))
        if key.startswith("container:"):
            spent["containers"] += delta
        else:
            spent[key.removeprefix("process:")] = round(delta, 2)
    spent["containers"] = round(spent["containers"], 2)
    return spent


def memory_per_instance(plane: BenchPlane, names: list[str], absent_is_zero: bool = False) -> dict[str, Any]:
    """Median MiB per instance and per service; an instance without a container counts 0 if `absent_is_zero`
    (deep sleep), else not at all."""
    memory = plane.memory_by_instance()
    totals = [sum(memory.get(n, {}).values()) for n in names if absent_is_zero or n in memory]
    services: dict[str, list[float]] = {}
    for name in names:
        for svc, mib in memory.get(name, {}).items():
            services.setdefault(svc, []).append(mib)
    return {"median_mib": round(statistics.median(totals), 1) if totals else None,
            "services_median_mib": {s: round(statistics.median(v), 1) for s, v in sorted(services.items())}}


def summary(report: dict[str, Any]) -> str:
    rows = []
    base = report["levels"][0] if report["levels"] else None
    for level in report["levels"]:
        s = level["sample"]
        use = s["cpu_percent_of_a_core"]
        rows.append([str(level["instances"]), fmt(s["idle_percent"], 1), fmt(s["load_average_1m"]["mean"]),
                     *(fmt(use.get(k), 1) for k in ("dockerd", "containerd", "containerd-shim", "containers",
                                                     "controller")),
                     fmt((level.get("memory") or {}).get("median_mib"), 1)])
    lines = [f"Idle cost of {report['config']['app']} instances at rest ({report['config']['seconds']:.0f}s samples; "
             "CPU columns in % of one core; the machine has "
             f"{base['sample']['cores'] if base else '?'} cores)"]
    lines += table(["instances", "idle %", "load", "dockerd", "containerd", "shims", "containers", "controller",
                    "MiB/inst"], rows, [9, 7, 6, 8, 10, 6, 10, 10, 8])
    for title, items in (("Notes", report["notes"]), ("Problems", report["problems"])):
        if items:
            lines += ["", f"{title}:", *(f"  - {item}" for item in items)]
    return "\n".join(lines)


def run_benchmark(args: argparse.Namespace, plane: BenchPlane, report: dict[str, Any]) -> None:
    levels: list[dict[str, Any]] = report["levels"]
    try:
        plane.up(report)
        log(f"no instance: settling {args.settle:.0f}s, then sampling {args.seconds:.0f}s")
        time.sleep(args.settle)
        levels.append({"instances": 0, "sample": sample(plane, args.seconds)})
        running: list[str] = []
        targets = list(args.counts)
        while targets:
            count = targets.pop(0)
            names = [f"idle{n:03d}" for n in range(len(running) + 1, count + 1)]
            log(f"creating {len(names)} more {args.app} instances ({args.parallel} at a time)")
            running += create_many(plane, args.app, names, args.parallel, report["problems"])
            log(f"{len(running)} instances: settling {args.settle:.0f}s, then sampling {args.seconds:.0f}s")
            time.sleep(args.settle)
            level: dict[str, Any] = {"instances": len(running), "sample": sample(plane, args.seconds)}
            level["memory"] = memory_per_instance(plane, running)
            levels.append(level)
            log(f"{len(running)} instances: {level['sample']['idle_percent']}% idle, "
                f"load {level['sample']['load_average_1m']['mean']}")
            if len(running) < count:
                report["notes"].append(f"stopped at {len(running)} instances: creates failed")
                break
            if not targets and args.max and count + args.step <= args.max:
                if level["sample"]["idle_percent"] >= args.stop_below:
                    targets.append(count + args.step)
                else:
                    report["notes"].append(f"stopped at {count} instances: idle below {args.stop_below}%")
    finally:
        plane.down(report)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--app", default="openslides", help="app of the instances (default: %(default)s)")
    parser.add_argument("--counts", default="10,20", help="instance counts to sample at (default: %(default)s)")
    parser.add_argument("--max", type=int, default=0, help="then keep adding --step instances up to this many")
    parser.add_argument("--step", type=int, default=10)
    parser.add_argument("--stop-below", type=float, default=50.0, help="stop adding below this idle %%")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each sample (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=45.0,
                        help="wait after the last create before sampling (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=4, help="creates at a time (default: %(default)s)")
    args = parser.parse_args(argv)
    args.counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    if not args.counts or args.counts[0] < 1:
        parser.error("--counts takes positive numbers, e.g. 10,20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT)
    plane.preflight()
    report = new_report("idle", app=args.app, counts=args.counts, max=args.max, step=args.step,
                        seconds=args.seconds, settle=args.settle, parallel=args.parallel, prefix=PREFIX)
    report["levels"] = []
    return conclude(report, lambda: run_benchmark(args, plane, report), summary)


if __name__ == "__main__":
    sys.exit(main())
