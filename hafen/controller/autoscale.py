"""Autoscaling: the controller's side of an instance's min, max and targets (instances/autoscale.py).

Each pass samples the web service of every autoscaled, awake, running instance: the requests the edge
proxy has open to its tasks (SleepKeeper reads them) and the CPU time of its tasks' containers on this
node (their cgroups), as a share of a replica's CPU limit. The samples of the last SAMPLE_WINDOW seconds
give a recommendation; instances/autoscale.decide turns it into the replicas to run, which a `scale`
operation applies, with a Decision row that says why. The history lives in memory: after a restart
the controller scales up at once if it must, but down only once it has seen a whole stabilisation
window again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from django.db import transaction

from hafen.catalog import get_app
from hafen.config import Settings
from hafen.controller.operations import web_replicas
from hafen.edge.config import WEB_PORT
from hafen.engine.base import Engine, Observation, ServiceState
from hafen.instances import autoscale, elastic
from hafen.instances import policy as elastic_policy
from hafen.instances.models import Desired, Instance, Sleep, State

log = logging.getLogger("hafen.controller")

SAMPLE_WINDOW = 10.0  # seconds of samples a recommendation averages


@dataclass
class _Seen:
    samples: deque[autoscale.Sample] = field(default_factory=lambda: deque(maxlen=200))
    history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=2000))
    cpu: dict[str, tuple[float, int]] = field(default_factory=dict)  # container: (time, ns) last read
    since: float = 0.0
    last_up: float | None = None


class Autoscaler:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.seen: dict[int, _Seen] = {}
        # the instances autoscaling has above their floor: their scale-down needs passes to decide
        self.above_floor: set[int] = set()

    def _cpu_percent(self, seen: _Seen, web: ServiceState, limit: float, now: float) -> float | None:
        """Mean CPU of the running tasks since the last read, in % of a replica's limit (in CPUs)."""
        shares: list[float] = []
        current: dict[str, tuple[float, int]] = {}
        for task in web.tasks:
            if task.state != "running" or not task.container:
                continue
            used = self.engine.cpu_usage_ns(task.container)
            if used is None:
                continue
            current[task.container] = (now, used)
            before = seen.cpu.get(task.container)
            if before is not None and now > before[0]:
                shares.append((used - before[1]) / ((now - before[0]) * 1e9))
        seen.cpu = current
        if not shares or limit <= 0:
            return None
        return sum(shares) / len(shares) / limit * 100

    def tick(self, obs: Observation, instances: dict[str, Instance], busy: set[str],
             open_requests: dict[str, int] | None, policies: dict[int, elastic_policy.Policy] | None = None,
             now: float | None = None) -> None:
        """`policies`: those this pass computed already (SleepKeeper's), by pk; the others are computed."""
        now = time.monotonic() if now is None else now
        self.above_floor = set()
        gone = set(self.seen) - {i.pk for i in instances.values()}
        for pk in gone:
            del self.seen[pk]
        for instance in instances.values():
            if instance.sandbox or instance.desired_state != Desired.RUNNING or instance.sleep != Sleep.AWAKE:
                self.seen.pop(instance.pk, None)
                continue
            policy = (policies or {}).get(instance.pk) or elastic_policy.effective(instance, self.settings)
            if not policy.autoscaled or not instance.replicas:
                if instance.auto_replicas and instance.name not in busy and instance.state == State.RUNNING:
                    self._apply(instance, 0, "autoscaling is off: the instance's own replicas again", {})
                self.seen.pop(instance.pk, None)
                continue
            app = get_app(instance.app)
            web = obs.services_of(instance.name).get(app.web_service)
            if web is None or instance.state != State.RUNNING:
                continue
            size = app.sizes.get(elastic_policy.limits_size(instance))
            seen = self.seen.setdefault(instance.pk, _Seen(since=now))
            running = [t for t in web.tasks if t.state == "running"]
            in_flight = sum(open_requests.get(f"{a}:{WEB_PORT}", 0) for t in running for a in t.addresses) \
                if open_requests is not None else None
            cpu = self._cpu_percent(seen, web, size.web_cpus if size else 0.0, now)
            if in_flight is not None:
                seen.samples.append(autoscale.Sample(now, len(running), in_flight, cpu))
            while seen.samples and now - seen.samples[0].at > SAMPLE_WINDOW:
                seen.samples.popleft()
            current, low = web_replicas(instance), max(policy.min, instance.floor_replicas)
            if current > low:
                self.above_floor.add(instance.pk)
            if instance.name in busy:
                continue
            recommendation = autoscale.recommend(current, seen.samples, policy.target_inflight, policy.target_cpu)
            if recommendation is None:
                continue
            seen.history.append((now, recommendation.desired))
            target, why = autoscale.decide(current, recommendation.desired, seen.history, seen.last_up, now,
                                           low=low, high=policy.max or 1, seen_since=seen.since)
            if target != current:
                if target > current:
                    seen.last_up = now
                else:  # the window starts again at the new size
                    seen.history.clear()
                    seen.since = now
                seen.samples.clear()
                self._apply(instance, target, why, recommendation.numbers)

    def _apply(self, instance: Instance, replicas: int, why: str, numbers: dict[str, object]) -> None:
        before = web_replicas(instance)
        with transaction.atomic():
            current = Instance.objects.select_for_update().get(pk=instance.pk)
            if current.desired_state != Desired.RUNNING or current.sleep != Sleep.AWAKE:
                return
            current.auto_replicas = replicas
            current.save(update_fields=["auto_replicas", "updated_at"])
            elastic.queue(current, "scale")
            after = replicas or current.replicas
            elastic.record(current, elastic_policy.Decision(
                "scale", f"{before} to {after} web replicas: {why}", {**numbers, "from": before, "to": after}))
        instance.auto_replicas = replicas
        log.info("%s: autoscaled from %d to %d web replicas (%s)", instance.name, before, replicas or
                 instance.replicas, why)
