"""Autoscaling decisions, after Kubernetes' Horizontal Pod Autoscaler, as pure functions of what was seen.

desired = ceil(current x observed / target) for each metric (open requests per replica from the edge,
CPU per replica from the containers' cgroups), the largest of them; nothing changes while the ratio is
within the tolerance band; up by at most doubling, once per SCALE_UP_PERIOD; down only once the
stabilisation window has been seen whole and holds no higher recommendation than the latest (so one step
down after a load ends, not one per value it passed); never outside [max(min, the events' floor), max].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TOLERANCE = 0.1
SCALE_UP_PERIOD = 15.0  # seconds
STABILISATION = 300.0  # seconds


@dataclass(frozen=True)
class Sample:
    """What one pass saw of an instance's web service: seconds since an origin, the replicas running, the
    open requests over them, and their CPU in % of a replica's limit (None: not known)."""

    at: float
    replicas: int
    in_flight: int
    cpu_percent: float | None


@dataclass(frozen=True)
class Recommendation:
    desired: int
    numbers: dict[str, Any]


def recommend(current: int, samples: Sequence[Sample], target_inflight: int, target_cpu: int
              ) -> Recommendation | None:
    """The replicas the metrics ask for, from the mean of the samples (None without any)."""
    usable = [s for s in samples if s.replicas > 0]
    if not usable or current <= 0:
        return None
    inflight = sum(s.in_flight / s.replicas for s in usable) / len(usable)
    cpu_seen = [s.cpu_percent for s in usable if s.cpu_percent is not None]
    ratios = {"inflight": inflight / target_inflight}
    if cpu_seen:
        ratios["cpu"] = sum(cpu_seen) / len(cpu_seen) / target_cpu
    wanted = {name: current if abs(ratio - 1) <= TOLERANCE else max(math.ceil(current * ratio), 0)
              for name, ratio in ratios.items()}
    desired = max(wanted.values())
    numbers = {"current": current, "inflight_per_replica": round(inflight, 2), "target_inflight": target_inflight,
               "cpu_percent": round(sum(cpu_seen) / len(cpu_seen), 1) if cpu_seen else None,
               "target_cpu": target_cpu, "samples": len(usable), "by_metric": wanted}
    return Recommendation(desired, numbers)


def decide(current: int, recommendation: int, history: Sequence[tuple[float, int]], last_up: float | None,
           now: float, low: int, high: int, seen_since: float) -> tuple[int, str]:
    """The replicas to run now, and why. `history` holds (time, recommendation) of the passes so far,
    `seen_since` the time from which the controller has recommendations at all."""
    low, high = max(low, 1), max(high, low, 1)
    if current < low:
        return low, f"below the least of {low}"
    if current > high:
        return high, f"above the most of {high}"
    if recommendation > current:
        if last_up is not None and now - last_up < SCALE_UP_PERIOD:
            return current, f"scaled up {now - last_up:.0f}s ago: at most once per {SCALE_UP_PERIOD:.0f}s"
        target = min(recommendation, current * 2, high)
        return target, "load above the target" if target > current else f"at the most of {high}"
    if recommendation < current:
        if now - seen_since < STABILISATION:
            return current, f"lower for less than the stabilisation window of {STABILISATION:.0f}s"
        window = [r for at, r in history if now - at <= STABILISATION]
        highest = max([recommendation, *window])
        if highest > recommendation:
            # a higher recommendation is still in the window: wait until it has left, then go down in one
            # step (not first to each value the load passed on its way down)
            return current, f"a recommendation of {highest} in the stabilisation window"
        target = max(recommendation, low)
        return min(target, current), "load below the target for the whole stabilisation window"
    return current, "at the target"
