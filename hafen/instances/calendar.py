"""The event calendar: an instance's events (an assembly, with its expected participants), who sees and
changes them, and the capacity the planned events need hour by hour.

The controller acts on them (controller/elastic.py): from HAFEN_EVENT_LEAD before an event's start to its
end the instance is awake, never sleeps, and runs at least the web replicas the app's participants table
gives for the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from hafen import wake
from hafen.access import audit
from hafen.access.policy import Action, Actor
from hafen.catalog import get_app
from hafen.config import get_settings
from hafen.engine import get_engine
from hafen.errors import EngineError, Forbidden, InvalidInput, NotFound
from hafen.instances import placement, validation
from hafen.instances import policy as elastic_policy
from hafen.instances.models import Desired, Event, Instance

MAX_PARTICIPANTS = 100_000
MAX_LENGTH = timedelta(days=14)
MAX_AHEAD = timedelta(days=366)
FORECAST_HOURS = 14 * 24


def validate(start: datetime | str, end: datetime | str, participants: int, title: str) -> tuple[datetime, datetime]:
    start_at, end_at = validation.moment(start, "start"), validation.moment(end, "end")
    now = timezone.now()
    if end_at <= start_at:
        raise InvalidInput("end: an event ends after it starts")
    if end_at <= now:
        raise InvalidInput("end: the event is over already")
    if end_at - start_at > MAX_LENGTH:
        raise InvalidInput("end: an event lasts at most 14 days")
    if start_at > now + MAX_AHEAD:
        raise InvalidInput("start: at most a year ahead")
    if not 1 <= participants <= MAX_PARTICIPANTS:
        raise InvalidInput(f"participants: 1 to {MAX_PARTICIPANTS}")
    if len(title) > 100 or any(ord(c) < 32 for c in title):
        raise InvalidInput("title: up to 100 characters on one line")
    return start_at, end_at


def describe(event: Event) -> dict[str, Any]:
    instance = event.instance
    app = get_app(instance.app)
    return {"id": event.pk, "instance": instance.name,
            "organisation": instance.organisation.slug if instance.organisation else None,
            "title": event.title, "start_at": event.start_at.isoformat(), "end_at": event.end_at.isoformat(),
            "participants": event.participants, "web_replicas": app.replicas_for(event.participants),
            "size": app.larger_size(instance.size, app.row_for(event.participants).size),
            "created_by": event.created_by}


def add(actor: Actor, name: str, *, start: datetime | str, end: datetime | str, participants: int,
        title: str = "") -> Event:
    from hafen.instances.services import authorized

    detail = {"start": str(start), "end": str(end), "participants": participants, "title": title}
    with audit.audited(actor, Action.POLICY, name, **detail) as note:
        start_at, end_at = validate(start, end, participants, title)
        instance = authorized(actor, Action.POLICY, name, note)
        if instance.desired_state in (Desired.DELETED, Desired.ERASED):
            raise InvalidInput(f"{name} is deleted; start it before planning an event")
        with transaction.atomic():
            event = Event.objects.create(instance=instance, title=title.strip(), start_at=start_at, end_at=end_at,
                                         participants=participants, created_by=actor.name)
        transaction.on_commit(lambda: wake.notify(get_settings().wake_path))
        note.detail["event"] = event.pk
        return event


def remove(actor: Actor, name: str, event_id: int) -> None:
    from hafen.instances.services import authorized

    with audit.audited(actor, Action.POLICY, name, event=event_id) as note:
        instance = authorized(actor, Action.POLICY, name, note)
        deleted, _ = Event.objects.filter(instance=instance, pk=event_id).delete()
        if not deleted:
            raise NotFound(f"{name} has no event {event_id}")
        transaction.on_commit(lambda: wake.notify(get_settings().wake_path))


def coming(actor: Actor, name: str | None = None) -> QuerySet[Event]:
    """The events not over yet of the instances the actor may see (of one, with `name`)."""
    from hafen.instances.services import authorized, instances_of

    scope = instances_of(actor) if name is None else Instance.objects.filter(pk=authorized(actor, Action.VIEW,
                                                                                           name).pk)
    return Event.objects.filter(instance__in=scope, end_at__gt=timezone.now()) \
        .select_related("instance", "instance__organisation")


# -- the capacity forecast ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hour:
    start: datetime
    memory_bytes: int  # what the instances need in this hour: those with an event at their event's replicas
    nano_cpus: int
    events: list[int]

    def over(self, memory_bytes: int) -> bool:
        """Memory is what cannot be shared: the CPU limits of instances may add up to more than the CPUs
        (they wait for each other), their memory limits may not (the kernel kills)."""
        return self.memory_bytes > memory_bytes


def forecast(actor: Actor, hours: int = FORECAST_HOURS) -> dict[str, Any]:
    """Per hour of the next `hours`: the memory and CPU the instances reserve, with those that have an event
    then at its replicas, against the swarm's schedulable nodes (an hour is over capacity by its memory).
    An instance that runs now counts with its own replicas in every hour (it may not sleep); a sleeping
    one only in the hours of its events."""
    if not actor.is_operator:
        raise Forbidden("only operators see the capacity forecast")
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    lead = elastic_policy.parse_duration(get_settings().event_lead, "HAFEN_EVENT_LEAD") or 0
    instances = list(Instance.objects.filter(sandbox=False, desired_state=Desired.RUNNING))
    end = now + timedelta(hours=hours)
    events = list(Event.objects.filter(instance__in=instances, end_at__gt=now,
                                       start_at__lt=end + timedelta(seconds=lead)).select_related("instance"))
    by_instance: dict[int, list[Event]] = {}
    for event in events:
        by_instance.setdefault(event.instance_id, []).append(event)
    cost: dict[tuple[str, str, str, int], tuple[int, int]] = {}

    def reserved(instance: Instance, replicas: int, size: str = "") -> tuple[int, int]:
        key = (instance.app, instance.version, get_app(instance.app).larger_size(instance.size, size), replicas)
        if key not in cost:
            cost[key] = placement.reserved(*key)
        return cost[key]

    base_memory = base_cpus = 0  # what runs whatever the hour: instances awake now without events
    for instance in instances:
        if instance.pk not in by_instance and not instance.sleep and instance.replicas:
            mem, cpu = reserved(instance, instance.replicas)
            base_memory, base_cpus = base_memory + mem, base_cpus + cpu
    planned = [i for i in instances if i.pk in by_instance]
    series: list[Hour] = []
    for index in range(hours):
        start = now + timedelta(hours=index)
        memory, cpus = base_memory, base_cpus
        ids: list[int] = []
        for instance in planned:
            # the middle of the hour: an event from 9:30 counts in the hour from 9:00
            floor = elastic_policy.event_floor(get_app(instance.app), by_instance[instance.pk],
                                               start + timedelta(minutes=30), lead)
            if floor.replicas:
                ids.append(floor.event_id or 0)
            elif instance.sleep or not instance.replicas:
                continue
            mem, cpu = reserved(instance, max(instance.replicas, floor.replicas), floor.size)
            memory, cpus = memory + mem, cpus + cpu
        series.append(Hour(start, memory, cpus, ids))
    try:
        nodes = [n for n in get_engine().nodes() if n.schedulable]
        capacity: dict[str, int] | None = {"memory_bytes": sum(n.memory_bytes for n in nodes),
                                           "nano_cpus": sum(n.nano_cpus for n in nodes)}
    except EngineError:
        capacity = None
    over = [h for h in series if capacity and h.over(capacity["memory_bytes"])]
    return {
        "capacity": capacity,
        "hours": [{"start": h.start.isoformat(), "memory_bytes": h.memory_bytes, "nano_cpus": h.nano_cpus,
                   "events": h.events, "over": h in over} for h in series],
        "over": [h.start.isoformat() for h in over],
    }
