"""Sleep and wake: the controller's side of the elastic-capacity policy.

Each pass it reads what the edge saw (the proxy's access log, through a watcher thread, and the
requests the proxy has open now, websockets included), records each instance's last request, and
decides from the instance's policy (instances/policy.py): an awake instance idle for its idle time
sleeps, a sleeper idle for its deep-sleep time sleeps deeper, a sleeper with a request after it fell
asleep wakes. A decision is a `sleep` or `wake` operation plus a Decision row that says why.

Proxies on other nodes (the nodes labelled for the edge) are read by their edge agents, whose reports
this controller follows (edge/remote.py): their requests count as the local proxy's do.

Safe by default: nothing sleeps before the access log has been read once since the controller started,
nor while a proxy does not say which requests it has open, nor while the agent of a proxy on another
ready node has not reported lately.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from hafen.catalog import get_app
from hafen.config import Settings
from hafen.controller.edge import EDGE_LABEL
from hafen.edge.activity import Watcher
from hafen.edge.client import Edge
from hafen.edge.config import ACCESS_LOG, WEB_PORT
from hafen.edge.remote import RemoteEdges
from hafen.engine.base import Engine, Observation
from hafen.instances import elastic, naming
from hafen.instances import policy as elastic_policy
from hafen.instances.backups import effective_policies
from hafen.instances.models import Desired, Event, Instance, Sleep, Snapshot, SnapshotStatus, State

log = logging.getLogger("hafen.controller")

# The last request is written to the database when it moved by this much (the idle times are longer).
RECORD_STEP = timedelta(seconds=5)


class SleepKeeper:
    def __init__(self, engine: Engine, edge: Edge, settings: Settings, on_request: Callable[[], None],
                 on_traffic: Callable[[], None] | None = None) -> None:
        self.edge = edge
        self.settings = settings
        self.watcher = Watcher(settings.edge_dir / ACCESS_LOG, on_request, on_traffic)
        self.remote = RemoteEdges(engine, naming.edge_agent_service(settings.prefix), on_request, on_traffic)
        self.held = ""  # why no instance may fall asleep now ("" when they may)
        self.open_requests: dict[str, int] | None = None  # what the proxy said this pass
        self.acted: set[str] = set()  # the instances this pass queued an operation for
        # this pass's policies of the running instances, by pk (the autoscaler reads them too)
        self.policies: dict[int, elastic_policy.Policy] = {}

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()
        self.remote.stop()

    def _hold(self, obs: Observation, remote_nodes: list[str]) -> str:
        if not self.watcher.caught_up():
            return "the edge's access log has not been read yet"
        silent = self.remote.silent(n for n in remote_nodes if obs.nodes[n].ready)
        if silent:
            names = ", ".join(obs.nodes[n].hostname or n for n in silent)
            return f"the edge proxy on {names} has not reported its requests lately"
        return ""

    def _seen(self) -> dict[str, float]:
        """The newest request of each host, at this node's proxy or another's."""
        seen = self.watcher.last_seen()
        for host, ts in self.remote.last_seen().items():
            if ts > seen.get(host, 0.0):
                seen[host] = ts
        return seen

    def _in_flight(self, obs: Observation, instance: Instance, open_requests: dict[str, int]) -> int:
        web = obs.services_of(instance.name).get(get_app(instance.app).web_service)
        if web is None:
            return 0
        return sum(open_requests.get(f"{address}:{WEB_PORT}", 0)
                   for task in web.tasks if task.state == "running" for address in task.addresses)

    def tick(self, obs: Observation, instances: dict[str, Instance], busy: set[str]) -> None:
        now = timezone.now()
        remote_nodes = sorted(n.id for n in obs.nodes.values()
                              if n.labels.get(EDGE_LABEL) == "true" and n.id != obs.local_node)
        self.remote.follow(bool(remote_nodes))
        seen = self._seen()
        self.held = self._hold(obs, remote_nodes)
        open_requests = self.edge.in_flight()
        if open_requests is None and not self.held:
            self.held = "the edge proxy does not say which requests it has open"
        if open_requests is not None:
            for address, count in self.remote.open_requests().items():
                open_requests[address] = open_requests.get(address, 0) + count
        self.open_requests = open_requests
        self.acted = set()
        candidates = [i for i in instances.values() if not i.sandbox and i.desired_state == Desired.RUNNING]
        policies = {i.pk: elastic_policy.effective(i, self.settings) for i in candidates}
        self.policies = policies
        lead = elastic_policy.parse_duration(self.settings.event_lead, "HAFEN_EVENT_LEAD") or 0
        events: dict[int, list[Event]] = {}
        for event in Event.objects.filter(end_at__gt=now, start_at__lte=now + timedelta(seconds=lead)):
            events.setdefault(event.instance_id, []).append(event)
        recorded: list[Instance] = []
        for instance in candidates:
            request = seen.get(instance.domain)
            last_request = datetime.fromtimestamp(request, UTC) if request is not None else None
            in_flight = self._in_flight(obs, instance, open_requests) if open_requests else 0
            last = max(t for t in (instance.last_active_at, last_request, now if in_flight else None,
                                   None if instance.last_active_at else now) if t is not None)
            if instance.last_active_at is None or last - instance.last_active_at >= RECORD_STEP \
                    or (instance.sleep and last > instance.last_active_at):
                instance.last_active_at = last
                recorded.append(instance)
            if instance.name in busy:
                continue
            floor = elastic_policy.event_floor(get_app(instance.app), events.get(instance.pk, []), now, lead)
            if instance.sleep:
                decision = elastic_policy.wake_decision(instance.sleep, instance.slept_at, last)
                if decision is None and floor.replicas:
                    decision = elastic_policy.Decision("wake", floor.reason, {"event": floor.event_id})
                if decision is not None:
                    self._decide(instance, decision)
                    continue
            if (floor.replicas, floor.size) != (instance.floor_replicas, instance.floor_size) \
                    and instance.state == State.RUNNING:
                self._set_floor(instance, floor)
                continue
            if floor.replicas or self.held or instance.state not in (State.RUNNING, State.SLEEPING):
                continue  # an event in its window keeps it awake
            policy = policies[instance.pk]
            decision = elastic_policy.sleep_decision(policy, instance.sleep, last, in_flight, now)
            if decision is not None and decision.action == "deep-sleep" and not self._backed_up(instance, last):
                # its last writes are backed up first (the backup schedule takes light sleepers): light sleep till then
                decision = elastic_policy.sleep_decision(replace(policy, deep_sleep=None), instance.sleep, last,
                                                         in_flight, now)
            if decision is not None:
                self._decide(instance, decision)
        if recorded:
            Instance.objects.bulk_update(recorded, ["last_active_at"])
        sleepers = [i.domain for i in candidates if i.sleep]
        self.watcher.watch(sleepers)
        self.remote.watch(sleepers)

    @staticmethod
    def _backed_up(instance: Instance, last_request: datetime) -> bool:
        """Whether deep sleep loses no backup: its backups are off, or one began after its last request."""
        if not effective_policies([instance])[instance.pk].enabled:
            return True
        newest = Snapshot.objects.filter(Q(instance=instance) & Q(status=SnapshotStatus.OK)) \
            .aggregate(newest=Max("created_at"))["newest"]
        return newest is not None and newest > last_request

    def _set_floor(self, instance: Instance, floor: elastic_policy.Floor) -> None:
        """The web replicas and limits an event asks for (or, after it, those of the instance again), by a
        scale (which also gives the services new limits: swarm rolls their tasks over)."""
        was, was_size = instance.floor_replicas, instance.floor_size
        with transaction.atomic():
            current = Instance.objects.select_for_update().get(pk=instance.pk)
            if current.desired_state != Desired.RUNNING or current.sleep:
                return
            current.floor_replicas, current.floor_size = floor.replicas, floor.size
            current.save(update_fields=["floor_replicas", "floor_size", "updated_at"])
            elastic.queue(current, "scale")
            self.acted.add(instance.name)
            reason = floor.reason or f"the event is over: {current.replicas} web replica(s) again" + (
                f", the limits of size {current.size}" if was_size else "")
            elastic.record(current, elastic_policy.Decision(
                "scale", reason, {"event": floor.event_id, "floor_before": was, "floor": floor.replicas,
                                  "size_before": was_size or current.size, "size": floor.size or current.size,
                                  "replicas": current.replicas}))
        instance.floor_replicas, instance.floor_size = floor.replicas, floor.size
        log.info("%s: web replicas of its events %d (was %d)", instance.name, floor.replicas, was)

    def _decide(self, instance: Instance, decision: elastic_policy.Decision) -> None:
        """Write the decision and its operation, if the instance is still as it was read (a user's stop
        or start may have come in since)."""
        with transaction.atomic():
            current = Instance.objects.select_for_update().get(pk=instance.pk)
            if current.desired_state != Desired.RUNNING or current.sleep != instance.sleep:
                return
            if decision.action == "wake":
                current.sleep = Sleep.AWAKE
            else:
                if current.sleep == Sleep.AWAKE:
                    current.slept_at = timezone.now()
                current.sleep = Sleep.DEEP if decision.action == "deep-sleep" else Sleep.LIGHT
                current.auto_replicas = 0  # it wakes with its own replicas; autoscaling starts afresh then
            current.save(update_fields=["sleep", "slept_at", "auto_replicas", "updated_at"])
            elastic.queue(current, "wake" if decision.action == "wake" else "sleep")
            self.acted.add(instance.name)
            elastic.record(current, decision)
        instance.sleep, instance.slept_at, instance.auto_replicas = current.sleep, current.slept_at, \
            current.auto_replicas
        log.info("%s: %s (%s)", instance.name, decision.action, decision.reason)
