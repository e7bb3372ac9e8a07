"""Moving an instance to another node: what a drain does for each instance, and an evacuation for each
instance of a node that no longer answers.

Volumes are local to a node, so an instance moves with its data the way the backups move data: a
backup, then a restore into fresh volumes on the new node (the restore checks the data's
fingerprint). The old copy is emptied only once the new one answers through the edge.

- move: the edge shows the "starting" page, the web stops (no write is lost after the backup), a
  backup is taken, the services go, the instance is pinned to its new node and brought up there from
  that backup, the edge routes to it again, and the old volumes are emptied.
- evacuate: the node is gone, so there is nothing to stop or back up: the instance is brought up
  elsewhere from its latest verified backup (the operator was told what that loses).

If a move fails before the new copy runs, the instance goes back to its old node, where its data
still is, and is brought up there again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone

from hafen.engine.base import Engine, Observation
from hafen.instances import placement
from hafen.instances.models import Desired, Instance, Operation, OpState, State
from hafen.instances.nodes import DRAIN_LABEL, MOVE_KINDS, moves_off
from hafen.instances.stack import render

if TYPE_CHECKING:
    from hafen.controller.operations import Context, Step

log = logging.getLogger("hafen.controller")


def _my_turn(limit: int) -> Callable[[Context], bool]:
    def run(ctx: Context) -> bool:
        """At most `limit` moves past this step at once (a drain queues one per instance)."""
        if ctx.op.params.get("turn"):
            return True
        moving = Operation.objects.filter(kind__in=MOVE_KINDS, state=OpState.RUNNING, params__turn=True) \
            .exclude(pk=ctx.op.pk).count()
        if moving >= limit:
            ctx.op.error = f"waiting: {moving} other instance(s) move now (at most {limit} at once)"
            return False
        ctx.op.params["turn"] = True
        return True

    return run


def _down(ctx: Context) -> bool:
    ctx.op.params.setdefault("down_since", timezone.now().isoformat())
    return True


def repin(ctx: Context) -> bool:
    """Choose the new node (the one asked for, or by the placement rule without the old one) and render
    the instance's services for it."""
    from hafen.controller.operations import Fail, stack_input

    params, instance = ctx.op.params, ctx.instance
    if instance.node_id != params["from"]:
        return True  # done by an earlier pass
    others = Instance.objects.exclude(node_id="").exclude(pk=instance.pk)
    nodes = [n for n in ctx.obs.nodes.values() if not params.get("to") or n.id == params["to"]]
    try:
        node = placement.choose(nodes, placement.reserved_by_node(others), placement.wanted_labels(instance),
                                avoid=[params["from"]])
    except placement.NoNode as exc:
        raise Fail(f"cannot move {instance.name}: {exc}") from exc
    instance.node_id, instance.node_name = node.id, node.hostname
    Instance.objects.filter(pk=instance.pk).update(node_id=node.id, node_name=node.hostname)
    params["to"], params["to_name"] = node.id, node.hostname
    ctx.specs, ctx.waves = render(stack_input(ctx.settings, ctx.engine, instance, ctx.versions, ctx.running,
                                              job_run=str(ctx.op.pk)))
    return True


def _up_again(ctx: Context) -> bool:
    """The edge routes to the instance again: how long it was down."""
    since = ctx.op.params.get("down_since")
    if since and "downtime_seconds" not in ctx.op.params:
        ctx.op.params["downtime_seconds"] = round((timezone.now() - datetime.fromisoformat(since)).total_seconds(), 1)
    return True


def fall_back(ctx: Context) -> bool:
    """After a failure before the new copy ran: pin the instance to its old node again (its data is there)
    and queue a repair that brings it up there. Nothing to do after a success."""
    params, instance = ctx.op.params, ctx.instance
    if not params.get("failure") or ctx.op.kind != "move" or params.get("old_emptied"):
        return True
    for state in ctx.services.values():
        ctx.engine.remove_service(state.name)
    if ctx.services:
        return False
    if instance.node_id != params["from"]:
        Instance.objects.filter(pk=instance.pk).update(node_id=params["from"], node_name=params["from_name"])
        instance.node_id, instance.node_name = params["from"], params["from_name"]
    if not Operation.objects.filter(instance=instance, kind="repair", state=OpState.PENDING).exists():
        Operation.objects.create(instance=instance, instance_name=instance.name,
                                 organisation_id=instance.organisation_id, kind="repair")
    params["fell_back"] = True
    # written now: the pass that ends a failed operation does not save what its steps changed
    Operation.objects.filter(pk=ctx.op.pk).update(params=params)
    return True


def empty_old(ctx: Context) -> bool:
    """Remove the old copy's volumes: on the controller's own node directly, elsewhere with a job there."""
    from hafen.controller import backup_steps as b
    from hafen.controller.operations import Fail
    from hafen.instances import naming

    params = ctx.op.params
    old = params["from"]
    if params.get("old_emptied") or ctx.op.kind == "evacuate":
        return True  # an evacuated node is gone; its volumes go with it (see `hafen node remove`)
    prefix, name = ctx.settings.prefix, ctx.instance.name
    if old == ctx.obs.local_node:
        for vol in ctx.app.volumes:
            if naming.volume(prefix, name, vol) in ctx.obs.volumes:
                ctx.engine.remove_volume(naming.volume(prefix, name, vol))
    else:
        try:
            if b.run_wipe(ctx, old) is None:
                return False
        except b.JobFailed as exc:
            raise Fail(f"the old copy on {params.get('from_name')} could not be emptied: {exc}") from exc
    params["old_emptied"] = True
    return True


def plan(ctx: Context, kind: str) -> list[Step]:
    from hafen.controller import backup_steps as b
    from hafen.controller import operations as o

    web = ctx.app.web_service
    limit = ctx.settings.move_concurrency
    steps = [o.Step("turn", "wait for a turn (moves run a few at a time)", _my_turn(limit)),
             o.Step("maintenance-on", "show the starting page at the edge", b.maintenance(True)),
             o.Step("down", "the instance is down from here", _down),
             o.Step("route", "take the domain off the web service", o.route)]
    if kind == "move":
        steps += [o.Step("stop-web", f"stop {web} (no write after the backup)", b.stop_web),
                  o.Step("backup", "back up the database and the files", b.back_up("snapshot")),
                  o.Step("backup-cleanup", "remove the backup job", b.remove_job("backup")),
                  o.Step("stop", "stop the services", o.stop_in_order)]
    steps += [o.Step("remove", "remove the services on the old node", o.remove_services),
              o.Step("removed", "wait for the services to go", o.removed),
              o.Step("repin", "choose the new node", repin)]
    bring_up = [step for step in o.bring_up_steps(ctx) if step.name not in ("route", "verify")]
    steps += [replace(step, name=f"new:{step.name}", title=f"{step.title} (on the new node)") for step in bring_up]
    steps += [o.Step("fall-back", "if it failed: back to the old node", fall_back, always=True),
              o.Step("maintenance-off", "route the domain to the web service again", b.maintenance(False),
                     always=True),
              o.Step("route-back", "route the domain at the edge", o.route),
              o.Step("verify", "check the app through the edge", o.verify),
              o.Step("up", "the instance is up again", _up_again),
              o.Step("empty-old", "empty the old copy's volumes", empty_old),
              o.Step("empty-old-cleanup", "remove the job that emptied them", b.remove_job("wipe"))]
    return steps


def finish_drains(engine: Engine, obs: Observation) -> None:
    """A node being drained whose instances have all moved off: the swarm moves what is left (caches,
    the edge's tasks) and the node is marked drained."""
    for node in obs.nodes.values():
        if node.labels.get(DRAIN_LABEL) != "moving":
            continue
        if Operation.objects.filter(moves_off(node.id)).exists():
            continue
        if Instance.objects.filter(node_id=node.id, sandbox=False, desired_state=Desired.RUNNING,
                                   state__in=(State.RUNNING, State.SLEEPING)).exists():
            continue  # started again meanwhile, or drained again: the next `hafen node drain` moves it
        engine.update_node(node.id, labels={**node.labels, DRAIN_LABEL: "done"}, availability="drain")
        log.info("nodes: %s drained", node.hostname)
