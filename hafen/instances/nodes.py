"""The service layer of the swarm's nodes: list, label, drain, activate, evacuate, remove, join.

Operators only: a node carries many customers' instances. A drain and an evacuation queue one
operation per instance (see hafen/controller/moves.py); the controller runs them, a few at a time,
and they survive a restart of the controller. Labels and availability are the swarm's own, read and
written through the engine.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hafen import wake
from hafen.access import audit
from hafen.access.policy import Actor
from hafen.config import get_settings
from hafen.engine import get_engine
from hafen.engine.base import NodeState
from hafen.errors import Conflict, Forbidden, InvalidInput, NotFound
from hafen.images.build import plan as image_plan
from hafen.images.registry import REGISTRY_IMAGE
from hafen.instances import elastic, placement, services
from hafen.instances.models import Desired, Instance, Operation, OpState, Snapshot, SnapshotStatus, State, Verification
from hafen.instances.placement import DRAIN_LABEL
from hafen.labels import parse_changes

MOVE_KINDS = ("move", "evacuate")


def _operator(actor: Actor) -> None:
    if not actor.is_operator:
        raise Forbidden("only operators manage the nodes of the swarm")


def find(nodes: list[NodeState], ref: str) -> NodeState:
    """A node by its hostname, its id, or an unambiguous start of its id."""
    ref = ref.strip()
    exact = [n for n in nodes if ref in (n.hostname, n.id)]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise Conflict(f"several nodes are called {ref!r}; use a node's id")
    started = [n for n in nodes if len(ref) >= 4 and n.id.startswith(ref)]
    if len(started) == 1:
        return started[0]
    raise NotFound(f"no node {ref!r}; `hafen node list` shows them")


def moves_off(node_id: str) -> Q:
    """The moves and evacuations still to run off a node."""
    return Q(kind__in=MOVE_KINDS, state__in=(OpState.PENDING, OpState.RUNNING), params__from=node_id)


def describe(node: NodeState, placed: list[Instance], moving: int) -> dict[str, Any]:
    reserved = sum(placement.reserved_bytes(i.app, i.version, i.size, i.replicas) for i in placed)
    return {
        "id": node.id, "name": node.hostname, "role": node.role, "leader": node.leader, "state": node.state,
        "availability": node.availability, "labels": node.labels, "address": node.address,
        "cpus": round(node.nano_cpus / 1e9, 2), "memory_bytes": node.memory_bytes, "reserved_bytes": reserved,
        "instances": sorted(i.name for i in placed if not i.sandbox), "draining": node.labels.get(DRAIN_LABEL, ""),
        "moves_pending": moving, "engine_version": node.engine_version,
    }


def list_nodes(actor: Actor) -> list[dict[str, Any]]:
    _operator(actor)
    nodes = get_engine().nodes()
    by_node: dict[str, list[Instance]] = {}
    for instance in Instance.objects.exclude(node_id="").only("name", "app", "version", "size", "replicas",
                                                               "node_id", "sandbox"):
        by_node.setdefault(instance.node_id, []).append(instance)
    moving: dict[str, int] = {}
    for params in Operation.objects.filter(kind__in=MOVE_KINDS, state__in=(OpState.PENDING, OpState.RUNNING)) \
            .values_list("params", flat=True):
        moving[params.get("from", "")] = moving.get(params.get("from", ""), 0) + 1
    ordered = sorted(nodes, key=lambda n: (n.role != "manager", n.hostname))
    return [describe(n, by_node.get(n.id, []), moving.get(n.id, 0)) for n in ordered]


def label(actor: Actor, ref: str, changes: list[str]) -> dict[str, Any]:
    with audit.audited(actor, "node-label", changes=changes) as note:
        _operator(actor)
        set_, remove = parse_changes(changes)
        engine = get_engine()
        node = find(engine.nodes(), ref)
        note.detail["node"] = node.hostname
        labels = {k: v for k, v in node.labels.items() if k not in remove} | set_
        engine.update_node(node.id, labels=labels)
    return _one(node.id)


def activate(actor: Actor, ref: str) -> dict[str, Any]:
    """The node takes new instances and tasks again (also ends a drain)."""
    with audit.audited(actor, "node-activate") as note:
        _operator(actor)
        engine = get_engine()
        node = find(engine.nodes(), ref)
        note.detail["node"] = node.hostname
        if Operation.objects.filter(moves_off(node.id)).exists():
            raise Conflict(f"instances are still moving off {node.hostname}; wait for the drain to end")
        labels = {k: v for k, v in node.labels.items() if k != DRAIN_LABEL}
        engine.update_node(node.id, labels=labels, availability="active")
    return _one(node.id)


def _one(node_id: str) -> dict[str, Any]:
    return next(n for n in list_nodes(Actor.local()) if n["id"] == node_id)


def _enqueue_move(instance: Instance, kind: str, params: dict[str, Any]) -> Operation:
    elastic.wake_for(instance, kind)
    return Operation.objects.create(instance=instance, instance_name=instance.name,
                                    organisation_id=instance.organisation_id, kind=kind, params=params)


def drain(actor: Actor, ref: str, confirm: str | None = None) -> dict[str, Any]:
    """Move every instance off the node (back up, restore on another node, switch the edge, empty the old
    copy), then let the swarm move what is left (jobs). No new instance lands there meanwhile.

    `confirm`: the node's name as the user typed it (UI); None where it was not asked (CLI, API).
    """
    with audit.audited(actor, "node-drain") as note:
        _operator(actor)
        engine = get_engine()
        nodes = engine.nodes()
        node = find(nodes, ref)
        note.detail["node"] = node.hostname
        if confirm is not None and confirm.strip() not in (node.hostname, ref):
            raise InvalidInput(f"type the node's name {node.hostname} to drain it; nothing was changed")
        if not node.ready:
            raise Conflict(f"{node.hostname} does not answer ({node.state}): nothing can be backed up there; "
                           f"use `hafen node evacuate {node.hostname}` to restore its instances elsewhere")
        if not any(n.schedulable and n.id != node.id for n in nodes):
            raise Conflict(f"no other node takes instances; add one before draining {node.hostname}")
        services.require_control_plane()
        placed = list(Instance.objects.filter(node_id=node.id, sandbox=False))
        busy = set(Operation.objects.filter(instance__in=placed, state__in=(OpState.PENDING, OpState.RUNNING))
                   .values_list("instance_name", flat=True))
        # a sleeping instance moves too (woken first: see _enqueue_move)
        moving = [i for i in placed if i.desired_state == Desired.RUNNING and i.state in (State.RUNNING,
                                                                                           State.SLEEPING)]
        left = sorted(i.name for i in placed if i not in moving)
        with transaction.atomic():
            # two drains at once: the second sees the first's moves (the rows are locked on PostgreSQL;
            # SQLite's transactions take the write lock when they begin)
            list(Instance.objects.select_for_update().filter(pk__in=[i.pk for i in moving]))
            ops = []
            for instance in moving:
                if Operation.objects.filter(moves_off(node.id), instance=instance).exists():
                    continue  # drained once already (a second `drain` resumes, it does not repeat)
                snapshot = Snapshot.objects.create(
                    instance=instance, instance_name=instance.name, organisation_id=instance.organisation_id,
                    reason="move", app=instance.app, version=instance.version, domain=instance.domain)
                ops.append(_enqueue_move(instance, "move", {
                    "snapshot": snapshot.pk, "restore": snapshot.pk, "from": node.id, "from_name": node.hostname}))
            transaction.on_commit(lambda: wake.notify(get_settings().wake_path))
        # No new instance lands there (placement skips the label); the swarm itself must still run the
        # backup jobs there, so the node stays available to it until every instance is off.
        engine.update_node(node.id, labels={**node.labels, DRAIN_LABEL: "moving"})
        note.detail.update(moves=len(ops), left=left)
    return {"node": node.hostname, "moves": [services.describe_operation(op) for op in ops],
            "queued_behind": sorted(busy & {i.name for i in moving}), "left": left}


def evacuation_plan(actor: Actor, ref: str) -> dict[str, Any]:
    """What an evacuation of a node that no longer answers would restore, and what each instance loses:
    the time since its latest verified backup."""
    _operator(actor)
    node = find(get_engine().nodes(), ref)
    if node.ready:
        raise Conflict(f"{node.hostname} answers: drain it (`hafen node drain {node.hostname}`), which loses nothing")
    now = timezone.now()
    items = []
    for instance in Instance.objects.filter(node_id=node.id, sandbox=False).order_by("name"):
        snapshot = (Snapshot.objects.filter(instance=instance, status=SnapshotStatus.OK,
                                            verification=Verification.VERIFIED).order_by("-created_at").first())
        items.append({
            "instance": instance.name, "organisation": instance.organisation.slug if instance.organisation else None,
            "snapshot": snapshot.short_id if snapshot else None,
            "backed_up_at": snapshot.created_at.isoformat() if snapshot else None,
            "data_lost_seconds": round((now - snapshot.created_at).total_seconds()) if snapshot else None,
        })
    return {"node": node.hostname, "node_id": node.id, "state": node.state, "instances": items}


def evacuate(actor: Actor, ref: str, confirm: str | None = None) -> dict[str, Any]:
    """Restore every instance of a node that no longer answers on another node, from its latest verified
    backup; instances without one are left and reported.

    `confirm`: the node's name as the user typed it (UI, API); None where it was asked before (CLI).
    """
    with audit.audited(actor, "node-evacuate") as note:
        plan = evacuation_plan(actor, ref)
        note.detail["node"] = plan["node"]
        if confirm is not None and confirm.strip() != plan["node"]:
            raise InvalidInput(f"type the node's name {plan['node']} to evacuate it; nothing was changed")
        services.require_control_plane()
        ops, skipped = [], []
        with transaction.atomic():
            list(Instance.objects.select_for_update().filter(node_id=plan["node_id"]))  # as in `drain`
            for item in plan["instances"]:
                instance = Instance.objects.get(name=item["instance"])
                if item["snapshot"] is None:
                    skipped.append(instance.name)
                    continue
                if Operation.objects.filter(moves_off(plan["node_id"]), instance=instance).exists():
                    continue
                snapshot = Snapshot.objects.filter(instance=instance, status=SnapshotStatus.OK,
                                                   verification=Verification.VERIFIED).order_by("-created_at").first()
                if snapshot is None:  # forgotten since the plan was read
                    skipped.append(instance.name)
                    continue
                if instance.desired_state != Desired.RUNNING:
                    instance.desired_state = Desired.RUNNING
                    instance.save(update_fields=["desired_state", "updated_at"])
                ops.append(_enqueue_move(instance, "evacuate", {
                    "restore": snapshot.pk, "from": plan["node_id"], "from_name": plan["node"]}))
            transaction.on_commit(lambda: wake.notify(get_settings().wake_path))
        note.detail.update(evacuated=[op.instance_name for op in ops], skipped=skipped)
    return {**plan, "operations": [services.describe_operation(op) for op in ops], "skipped": skipped}


def remove(actor: Actor, ref: str, force: bool = False) -> None:
    with audit.audited(actor, "node-remove") as note:
        _operator(actor)
        engine = get_engine()
        node = find(engine.nodes(), ref)
        note.detail["node"] = node.hostname
        placed = sorted(Instance.objects.filter(node_id=node.id).values_list("name", flat=True))
        if placed:
            raise Conflict(f"{len(placed)} instance(s) live on {node.hostname} ({', '.join(placed[:5])}"
                           f"{', ...' if len(placed) > 5 else ''}): drain or evacuate it first")
        if node.role == "manager":
            raise Conflict(f"{node.hostname} is a manager: demote it first (docker node demote {node.hostname})")
        if node.ready and node.availability != "drain":
            raise Conflict(f"{node.hostname} still runs tasks: drain it first (`hafen node drain {node.hostname}`)")
        engine.remove_node(node.id, force=force or not node.ready)


def join_command(actor: Actor) -> dict[str, Any]:
    """What to run on a new machine: load the images it cannot pull, then join the swarm as a worker.

    With the installation's registry that is the registry's own image (its mirror on the new node serves
    every other image); without it, every image hafen deploys."""
    _operator(actor)
    info = get_engine().join_info()
    if not info.managers:
        raise Conflict("no manager of the swarm answers with an address")
    images = [REGISTRY_IMAGE] if get_settings().registry_port else sorted(
        job.tag for job in image_plan() if job.context is not None)
    return {
        "join": f"docker swarm join --token {info.worker_token} {info.managers[0]}",
        "images": images,
        "load": f"docker save {' '.join(images)} | ssh NEW-MACHINE docker load",
        "load_why": "the registry's image: its mirror on the new machine serves every other image"
        if get_settings().registry_port else "every image hafen runs (no registry: HAFEN_REGISTRY_PORT is 0)",
    }


def recent_moves(actor: Actor, limit: int = 30) -> list[dict[str, Any]]:
    """The latest moves and evacuations, newest first: what a drain is doing and how long each was down."""
    _operator(actor)
    return [services.describe_operation(op)
            for op in Operation.objects.filter(kind__in=MOVE_KINDS).order_by("-created_at", "-id")[:limit]]
