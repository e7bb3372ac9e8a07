"""Operations as lists of idempotent steps, advanced a little on every pass.

A step looks at the latest observation, acts if the engine differs from what
it wants, and says whether it is done. A step that is not done is asked again
on the next pass, with a fresh observation; so a controller that dies at any
point picks up where it was, and repeats nothing that took effect.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from hafen import crypto
from hafen.catalog import App, get_app
from hafen.config import Settings
from hafen.controller import mail, moves, updates
from hafen.controller.edge import EdgeReconciler
from hafen.edge.client import Edge
from hafen.engine.base import Engine, Mount, Observation, ServiceSpec, ServiceState
from hafen.errors import EngineConflict, EngineError, HafenError
from hafen.instances import naming, placement
from hafen.instances import policy as elastic_policy
from hafen.instances.models import Desired, Instance, Operation, OpState, SecretStatus, State
from hafen.instances.stack import StackInput, image_tags, render
from hafen.mail import relay as mail_relay

log = logging.getLogger("hafen.controller")

MAX_TASK_FAILURES = 3
# A node that cannot pull an image yet (its registry mirror starts, right after it joined) is given this long
# before its tasks' pull failures count as failures of the service.
PULL_GRACE = timedelta(minutes=2)
_PULL_FAILED = re.compile(r"No such image|pull access denied|manifest unknown", re.IGNORECASE)
STEP_TIMEOUT = timedelta(minutes=10)
MAX_ATTEMPTS = 8

BRING_UP = ("create", "start", "repair")
# An unfinished operation of these kinds ends at once when a newer one of SUPERSEDING is queued:
# the newer one brings the instance to its (newer) desired state by itself. passwd and erase run to the end.
SUPERSEDABLE = frozenset({"create", "start", "repair", "restart", "scale", "stop", "delete", "sleep"})
SUPERSEDING = frozenset({"start", "stop", "restart", "scale", "delete", "erase", "wake"})


class Fail(HafenError):
    """A permanent problem: the operation fails with this message."""


def web_replicas(instance: Instance) -> int:
    """What the web service runs besides an event's floor: autoscaling's choice, or the instance's replicas."""
    return instance.auto_replicas or instance.replicas


def stack_input(settings: Settings, engine: Engine, instance: Instance, versions: dict[str, int],
                running: bool, job_run: str = "") -> StackInput:
    """What the instance's stack template is rendered from."""
    return StackInput(
        prefix=settings.prefix,
        name=instance.name,
        domain=instance.domain,
        app=get_app(instance.app),
        version=instance.version,
        # an event's floor raises the limits to those of its size (if larger), and the replicas, but never
        # brings up a web service scaled to zero on purpose
        size=elastic_policy.limits_size(instance),
        replicas=max(web_replicas(instance), instance.floor_replicas) if instance.replicas else 0,
        secret_versions=versions,
        running=running,
        restart=instance.restart_count,
        job_run=job_run,
        edge=not instance.sandbox,
        node=instance.node_id,
        images=instance.images,
        image_ref=engine.image_ref,
        sleep=instance.sleep,
        mail_domain=mail_relay.mail_domain(settings.mail_from),
    )


def pin_images(settings: Settings, engine: Engine, instance: Instance) -> None:
    """Pin each image tag of the instance's stack that is not pinned yet to its current build; an image
    rebuilt later reaches the instance only through an update."""
    tags = image_tags(stack_input(settings, engine, instance, instance.secret_versions(), running=True))
    found = {tag: engine.image_id(tag) for tag in sorted(tags - set(instance.images))}
    found = {tag: image for tag, image in found.items() if image}
    if found:
        instance.images = {**instance.images, **found}
        Instance.objects.filter(pk=instance.pk).update(images=instance.images)


@dataclass
class Context:
    engine: Engine
    edge: Edge
    edge_state: EdgeReconciler
    settings: Settings
    obs: Observation
    instance: Instance
    op: Operation
    app: App = field(init=False)
    # the secret versions the specs use: the current ones, or those this operation introduces
    versions: dict[str, int] = field(init=False)
    running: bool = field(init=False)
    specs: dict[str, ServiceSpec] = field(init=False)
    waves: list[list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.app = get_app(self.instance.app)
        # An update runs to its end as it began, even when a stop or delete was queued meanwhile (that one
        # follows it); every other operation brings the instance to its desired state.
        self.running = (self.instance.desired_state == Desired.RUNNING or self.op.kind == "update") \
            and self.op.kind not in ("stop", "delete", "erase")
        self.versions = self.instance.secret_versions(self.op)
        if self.op.kind not in ("delete", "erase", "stop"):
            pin_images(self.settings, self.engine, self.instance)
        self.specs, self.waves = render(stack_input(self.settings, self.engine, self.instance, self.versions,
                                                    self.running, job_run=str(self.op.pk)))

    @property
    def services(self) -> dict[str, ServiceState]:
        return self.obs.services_of(self.instance.name)

    def labels(self) -> dict[str, str]:
        return naming.labels(self.settings.prefix, self.instance.name)

    def volume_mount(self, vol: str, target: str, read_only: bool = False) -> Mount:
        return naming.volume_mount(self.settings.prefix, self.instance.name, vol, target, self.instance.node_id,
                                   read_only=read_only)

    @property
    def pinned(self) -> list[str]:
        return naming.pinned_to(self.instance.node_id)

    @property
    def data_elsewhere(self) -> bool:
        """Whether the instance's volumes live on another node than the one the controller talks to
        (that node's volumes are neither listed nor made nor removed through this engine)."""
        return bool(self.instance.node_id) and self.instance.node_id != self.obs.local_node


StepFn = Callable[[Context], bool]


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: StepFn
    # runs even after an earlier step failed (clean-up, teardown); the operation fails afterwards
    always: bool = False
    # runs only after an earlier step failed (an update's way back); skipped when all went well
    rollback: bool = False


# -- steps ---------------------------------------------------------------------------------------


def place(ctx: Context) -> None:
    """Choose the node of a new instance and pin its stateful services there. An instance made before
    hafen placed instances (its services or volumes exist) stays where Docker put it."""
    instance = ctx.instance
    stack_prefix = f"{naming.stack(ctx.settings.prefix, instance.name)}_"
    if instance.node_id or not ctx.obs.nodes or ctx.services \
            or any(v.startswith(stack_prefix) for v in ctx.obs.volumes):
        return
    others = Instance.objects.exclude(node_id="").exclude(pk=instance.pk)
    node = placement.choose(ctx.obs.nodes.values(), placement.reserved_by_node(others),
                            placement.wanted_labels(instance))
    instance.node_id, instance.node_name = node.id, node.hostname
    Instance.objects.filter(pk=instance.pk).update(node_id=node.id, node_name=node.hostname)
    ctx.specs, ctx.waves = render(stack_input(ctx.settings, ctx.engine, instance, ctx.versions, ctx.running,
                                              job_run=str(ctx.op.pk)))
    log.info("%s: placed on node %s", instance.name, node.hostname)


def prepare(ctx: Context) -> bool:
    """The node of a new instance, its networks (its own, and the one the edge proxy reaches its web
    service on), volumes and Docker secrets (current versions)."""
    try:
        place(ctx)
    except placement.NoNode as exc:
        raise Fail(str(exc)) from exc
    instance = ctx.instance
    if ctx.op.kind in BRING_UP and (instance.maintenance or instance.notice):
        # a restore or update that failed half-way left its page up: bringing the instance up ends it
        instance.maintenance, instance.notice = False, ""
        Instance.objects.filter(pk=instance.pk).update(maintenance=False, notice="")
    prefix, name = ctx.settings.prefix, ctx.instance.name
    networks = [naming.internal_network(prefix, name)]
    if not ctx.instance.sandbox:
        networks.append(naming.instance_edge_network(prefix, name))
    for network in networks:
        if network not in ctx.obs.networks:
            ctx.engine.create_network(network, ctx.labels(), internal=True)
    if naming.mail_network(prefix, name) in {n.name for spec in ctx.specs.values() for n in spec.networks}:
        mail.ensure_network(ctx.engine, ctx.settings, ctx.obs, name)  # the relay joins it on its next pass
    for vol in ctx.app.volumes if not ctx.data_elsewhere else ():  # else made where first mounted, labelled
        if naming.volume(prefix, name, vol) not in ctx.obs.volumes:
            ctx.engine.create_volume(naming.volume(prefix, name, vol), ctx.labels())
    versions = ctx.versions
    for secret in ctx.instance.secrets.all():
        if secret.version != versions[secret.name]:
            continue
        docker_name = naming.secret(prefix, name, secret.name, secret.version)
        if docker_name not in ctx.obs.secrets:
            # EngineConflict: made by an earlier pass that died before it was observed
            with contextlib.suppress(EngineConflict):
                ctx.engine.create_secret(docker_name, crypto.decrypt(secret.ciphertext).encode(), ctx.labels())
    return True


def _tail(ctx: Context, svc: str) -> str:
    try:
        lines = list(ctx.engine.service_logs(ctx.specs[svc].name, tail=5))
    except EngineError:
        return ""
    return " | ".join(line.strip() for line in lines if line.strip())[-600:]


def deploy(services: list[str]) -> StepFn:
    def run(ctx: Context) -> bool:
        current = ctx.services
        changed = [ctx.engine.apply_service(ctx.specs[svc], current.get(svc)) for svc in services]
        return not any(changed)  # after a change, wait for an observation of it

    return run


def _past(ctx: Context, grace: timedelta) -> bool:
    """Whether the operation's running step started more than `grace` ago."""
    record = next((r for r in ctx.op.steps if r.get("state") == "running" and r.get("started_at")), None)
    return record is None or timezone.now() - datetime.fromisoformat(record["started_at"]) > grace


def wait_for(services: list[str]) -> StepFn:
    def run(ctx: Context) -> bool:
        current = ctx.services
        ready = True
        for svc in services:
            spec, state = ctx.specs[svc], current.get(svc)
            if state is None or state.spec_digest != spec.digest():
                ready = False
                continue
            failures = state.failures if spec.job or _past(ctx, PULL_GRACE) else [
                t for t in state.failures if not _PULL_FAILED.search(t.error)]
            if len(failures) >= (1 if spec.job else MAX_TASK_FAILURES):
                what = "setup job" if spec.job else "service"
                reason = state.last_error or "exited with an error"
                tail = _tail(ctx, svc)
                raise Fail(f"{what} {svc} failed: {reason}" + (f"; last log lines: {tail}" if tail else ""))
            if not (state.complete if spec.job else state.converged()):
                ready = False
        return ready

    return run


def route(ctx: Context) -> bool:
    """Wait until the edge has the route this instance should now have."""
    if ctx.edge_state.routed(ctx.instance, ctx.obs):
        return True
    if ctx.edge_state.problem:
        ctx.op.error = ctx.edge_state.problem
    return False


def verify(ctx: Context) -> bool:
    """The app's health path answers through the edge (unless a stop or delete queued meanwhile took the
    domain off the web service: the edge shows its page then, and the operation that follows stops it)."""
    if ctx.instance.desired_state != Desired.RUNNING:
        return True
    status = ctx.edge.probe(ctx.instance.domain, ctx.app.health_path)
    if status == 200:
        return True
    ctx.op.error = f"{ctx.app.health_path} answers {status or 'nothing'} through the edge"
    return False


def stop_in_order(ctx: Context) -> bool:
    """Scale to zero in reverse start order: the web service stops while its database still answers.

    Stopped all at once, a web server waits on a cache that is gone and a database
    waits on its clients, each until it is killed at the end of its grace period.
    """
    current = ctx.services
    for wave in reversed(ctx.waves):
        busy = False
        for svc in wave:
            state = current.get(svc)
            if state is None:
                continue
            spec = replace(ctx.specs[svc], replicas=0)  # (a verification's teardown has specs that run)
            if spec.job:
                ctx.engine.remove_service(spec.name)
            elif ctx.engine.apply_service(spec, state) or state.running or state.stale:
                busy = True
        if busy:
            return False
    return True


def remove_services(ctx: Context) -> bool:
    for state in ctx.services.values():
        ctx.engine.remove_service(state.name)
    return True


def removed(ctx: Context) -> bool:
    return not ctx.services


def prune_secrets(ctx: Context) -> bool:
    """Docker secrets of other versions, once no service holds them (the rows: see `finish`)."""
    prefix, name = ctx.settings.prefix, ctx.instance.name
    keep = {naming.secret(prefix, name, s, v) for s, v in ctx.versions.items()}
    mine = f"{naming.stack(prefix, name)}_"
    for secret in sorted(s for s in ctx.obs.secrets if s.startswith(mine) and s not in keep):
        try:
            ctx.engine.remove_secret(secret)
        except EngineConflict:
            return False
    return True


def remove_data(ctx: Context) -> bool:
    """Volumes, secrets and networks (the edge proxy detached first); volumes stay busy until the
    containers are gone."""
    prefix, name = ctx.settings.prefix, ctx.instance.name
    mine = f"{naming.stack(prefix, name)}_"
    ctx.engine.remove_stopped_containers(ctx.labels())
    try:
        for vol in sorted(v for v in ctx.obs.volumes if v.startswith(mine)):
            ctx.engine.remove_volume(vol)
        for secret in sorted(s for s in ctx.obs.secrets if s.startswith(mine)):
            ctx.engine.remove_secret(secret)
        edge = naming.instance_edge_network(prefix, name)
        for container, attached in sorted(ctx.obs.edge_containers.items()):
            if edge in attached:
                ctx.engine.disconnect_container(edge, container)
        for network in (naming.internal_network(prefix, name), edge):
            if network in ctx.obs.networks:
                ctx.engine.remove_network(network)
    except EngineConflict as exc:
        ctx.op.error = f"waiting for the containers of {name} to stop: {exc}"
        return False
    return True


# -- plans ---------------------------------------------------------------------------------------


def bring_up_steps(ctx: Context) -> list[Step]:
    """Start the waves in order; with `params["restore"]`, the backup's data is restored once the
    first wave (the database) runs. A sandbox gets no route and no check through the edge."""
    from hafen.controller import backup_steps as b

    sandbox = ctx.instance.sandbox
    steps = [Step("prepare", "network, volumes and secrets", prepare)]
    for index, wave in enumerate(ctx.waves):
        label = ", ".join(wave)
        steps.append(Step(f"deploy:{label}", f"start {label}", deploy(wave)))
        if index == 0 and not sandbox:  # the edge reloads while the first services start
            steps.append(Step("route", "announce the domain at the edge", route))
        steps.append(Step(f"wait:{label}", f"wait for {label}", wait_for(wave)))
        if index == 0 and ctx.op.params.get("restore"):
            steps += [Step("restore", "restore the database and files from the backup", b.restore),
                      Step("restore-cleanup", "remove the restore job", b.remove_job("restore"), always=True)]
    if not sandbox:
        steps.append(Step("verify", "check the app through the edge", verify))
    return steps


def sleep_steps(ctx: Context) -> list[Step]:
    """The edge shows the waking page, then the web service (in deep sleep every service, web first)
    goes to zero replicas; the volumes, networks and the proxy's attachment stay, for a quick wake."""
    web = ctx.app.web_service
    steps = [Step("route", "show the waking page at the edge", route),
             Step(f"deploy:{web}", f"scale {web} to zero", deploy([web])),
             Step(f"wait:{web}", f"wait for {web} to stop", wait_for([web]))]
    if ctx.instance.sleep == "deep":
        steps.append(Step("stop", "stop the database and the cache too", stop_in_order))
    return steps


def wake_steps(ctx: Context) -> list[Step]:
    """The services in their waves, without the setup job (nothing of the data changed while it slept); all
    at once where the app's web answers its health check only once its dependencies do."""
    steps: list[Step] = []
    waves = ctx.waves
    if ctx.app.health_covers_dependencies:
        waves = [[svc for wave in waves for svc in wave]]
    for index, wave in enumerate(waves):
        wave = [svc for svc in wave if not ctx.specs[svc].job]
        if not wave:
            continue
        label = ", ".join(wave)
        steps += [Step(f"deploy:{label}", f"start {label}", deploy(wave))]
        if index == 0:
            steps.append(Step("route", "keep the waking page until the web answers", route))
        steps.append(Step(f"wait:{label}", f"wait for {label}", wait_for(wave)))
    return [*steps, Step("verify", "check the app through the edge", verify)]


def _remove_data(ctx: Context) -> list[Step]:
    """Volumes, secrets and networks; volumes on another node than the controller's are emptied by a job there."""
    from hafen.controller import backup_steps as b

    steps = []
    if ctx.data_elsewhere:
        steps = [Step("wipe", f"empty the volumes on {ctx.instance.node_name or 'their node'}", b.wipe),
                 Step("wipe-cleanup", "remove the job that emptied them", b.remove_job("wipe"))]
    return [*steps, Step("remove-data", "remove volumes, secrets and network", remove_data)]


def _teardown(ctx: Context, always: bool) -> list[Step]:
    steps = [
        Step("route", "remove the route at the edge", route),
        Step("stop", "stop the services, web first", stop_in_order),
        Step("remove", "remove the services", remove_services),
        Step("removed", "wait for the services to go", removed),
        *_remove_data(ctx),
    ]
    if ctx.instance.sandbox:
        steps = steps[1:]
    return [replace(step, always=always) for step in steps]


def _backup_plan(ctx: Context, kind: str) -> list[Step]:
    from hafen.controller import backup_steps as b

    web = ctx.app.web_service
    setup = [svc for svc, spec in ctx.specs.items() if spec.job]
    if kind == "backup":
        return [Step("backup", "back up the database and the files", b.back_up("snapshot")),
                Step("queue-verify", "queue the verification of the backup", b.queue_verify),
                Step("backup-cleanup", "remove the backup job", b.remove_job("backup"), always=True)]
    if kind == "verify":
        return [*bring_up_steps(ctx),
                Step("check", "check the restored data and the admin's login", b.check),
                Step("check-cleanup", "remove the check job", b.remove_job("check"), always=True),
                *_teardown(ctx, always=True)]
    # restore in place
    caches = [svc for svc in ctx.app.backup.caches if svc in ctx.specs]
    label = ", ".join(caches)
    return [
        Step("safety", "back up the current state first (safety backup)", b.back_up("safety")),
        Step("backup-cleanup", "remove the backup job", b.remove_job("backup")),
        Step("maintenance-on", "show the starting page at the edge", b.maintenance(True)),
        Step("route", "take the domain off the web service", route),
        Step("stop-web", f"stop {web}", b.stop_web),
        Step("restore", "restore the database and files from the backup", b.restore),
        Step("restore-cleanup", "remove the restore job", b.remove_job("restore"), always=True),
        *([Step("caches-remove", f"empty {label} (caches of the replaced data)", b.remove_caches),
           Step(f"deploy:{label}", f"start {label}", deploy(caches)),
           Step(f"wait:{label}", f"wait for {label}", wait_for(caches))] if caches else []),
        Step("deploy:setup", "run the setup job", deploy(setup)),
        Step("wait:setup", "wait for the setup job", wait_for(setup)),
        Step(f"deploy:{web}", f"start {web}", deploy([web])),
        Step(f"wait:{web}", f"wait for {web}", wait_for([web])),
        Step("maintenance-off", "route the domain to the web service again", b.maintenance(False), always=True),
        Step("route-back", "route the domain at the edge", route),
        Step("verify", "check the app through the edge", verify),
    ]


def _converging_kind(ctx: Context) -> str:
    """The kind whose plan the operation runs.

    A restart or scale of an instance that has not settled in its desired state (it took over
    from an unfinished bring-up or stop, or the last operation failed) brings it all the way there.
    """
    kind, instance = ctx.op.kind, ctx.instance
    settled = (instance.state, instance.desired_state) in (
        (State.RUNNING, Desired.RUNNING), (State.STOPPED, Desired.STOPPED))
    if kind in ("restart", "scale") and not settled:
        return "start" if instance.desired_state == Desired.RUNNING else "stop"
    return kind


def plan(ctx: Context, kind: str | None = None) -> list[Step]:
    kind = kind or ctx.op.kind
    web = ctx.app.web_service
    setup = [svc for svc, spec in ctx.specs.items() if spec.job]
    if kind in BRING_UP:
        return bring_up_steps(ctx)
    if kind in ("backup", "verify", "restore"):
        return _backup_plan(ctx, kind)
    if kind in moves.MOVE_KINDS:
        return moves.plan(ctx, kind)
    if kind == "update":
        return updates.plan(ctx)
    if kind in ("restart", "scale"):
        # a scale sets the web's replicas, and an event's limits change the other services too (each wave
        # in turn; a wave without the web whose services are as rendered is left out)
        # (a later pass, whose plan leaves that wave out once its deploy made the specs equal, finds the
        # wave's wait among the create's steps of the same name: see _known_steps)
        current = ctx.obs.services_of(ctx.instance.name)
        long_running = ([svc for svc in wave if not ctx.specs[svc].job] for wave in ctx.waves)
        waves = [wave for wave in long_running if wave and (web in wave or any(
            svc in current and current[svc].spec_digest != ctx.specs[svc].digest() for svc in wave))] \
            if kind == "scale" else [[web]]
        update = [step for wave in waves for label in [", ".join(wave)]
                  for step in (Step(f"deploy:{label}", f"update {label}", deploy(wave)),
                               Step(f"wait:{label}", f"wait for {label}", wait_for(wave)))]
        if ctx.instance.replicas == 0:  # the edge lets go of the web service before it stops (see `route`)
            return [Step("route", "show the stopped page at the edge", route), *update]
        return [*update, Step("route", "route the domain at the edge", route)]
    if kind == "sleep":
        return sleep_steps(ctx)
    if kind == "wake":
        return wake_steps(ctx)
    if kind == "passwd":
        return [
            Step("prepare", "new secret", prepare),
            Step("deploy:setup", "run the setup job", deploy(setup)),
            Step("wait:setup", "wait for the setup job", wait_for(setup)),
            Step("prune", "remove the old secret", prune_secrets),
        ]
    if kind == "stop":
        return [
            Step("route", "show the stopped page at the edge", route),
            Step("stop", "stop the services, web first", stop_in_order),
        ]
    if kind in ("delete", "erase"):
        steps = [
            Step("route", "remove the route at the edge", route),
            Step("stop", "stop the services, web first", stop_in_order),
            Step("remove", "remove the services", remove_services),
            Step("removed", "wait for the services to go", removed),
        ]
        if kind == "erase":
            steps += _remove_data(ctx)
        return steps
    raise Fail(f"unknown operation {kind!r}")


_START_STATE = {"create": State.CREATING, "start": State.CREATING, "repair": State.CREATING,
                "restore": State.RESTORING, "move": State.MOVING, "evacuate": State.MOVING, "update": State.UPDATING,
                "stop": State.STOPPING, "delete": State.STOPPING, "erase": State.STOPPING,
                "sleep": State.SLEEPING, "wake": State.WAKING}
_END_STATE = {"stop": State.STOPPED, "delete": State.DELETED, "sleep": State.SLEEPING}


def _now_iso() -> str:
    return timezone.now().isoformat()


def _known_steps(ctx: Context) -> dict[str, Step]:
    """Every step the context offers, by name: the operation's own plan first."""
    known: dict[str, Step] = {}
    for kind in (ctx.op.kind, "create", "restart", "passwd", "erase", "restore"):
        for step in plan(ctx, kind):
            known.setdefault(step.name, step)
    return known


def advance(ctx: Context) -> bool:
    """Run the operation's steps as far as they go now; return whether it finished.

    The plan is chosen at the first pass and recorded in op.steps; later passes run the
    recorded steps by name, whatever the plan would be now.
    """
    op, instance = ctx.op, ctx.instance
    if not op.steps or op.state == OpState.PENDING:
        kind = _converging_kind(ctx)
        if not op.steps:
            op.steps = [{"name": s.name, "title": s.title, "state": "pending"} for s in plan(ctx, kind)]
        if op.state == OpState.PENDING:
            op.state = OpState.RUNNING
            op.started_at = timezone.now()
            if kind in _START_STATE:
                instance.state = _START_STATE[kind]
                instance.error = ""
                instance.save(update_fields=["state", "error", "updated_at"])
    by_name = _known_steps(ctx)
    for index, record in enumerate(op.steps):
        if record["state"] in ("done", "skipped", "failed"):
            continue
        step = by_name.get(record["name"])
        if step is None:
            raise Fail(f"step {record['name']} no longer exists in the plan of {op.kind}")
        if (op.params.get("failure") and not step.always) or (step.rollback and not op.params.get("failure")):
            record["state"] = "skipped"
            continue
        if record["state"] != "running":
            record.update(state="running", started_at=_now_iso())
        started = time.monotonic()
        try:
            done = step.run(ctx)
            if not done and timezone.now() - datetime.fromisoformat(record["started_at"]) > STEP_TIMEOUT:
                raise Fail(f"step '{step.title}' did not finish in {STEP_TIMEOUT}: {op.error or 'no reason seen'}")
        except Fail as exc:
            later = [by_name.get(r["name"]) for r in op.steps[index + 1:]]
            if step.always or not any(s is not None and s.always for s in later):
                raise
            # the steps that clean up still run; the operation fails once they are done
            record.update(state="failed", finished_at=_now_iso())
            op.params["failure"] = str(exc)
            op.error = str(exc)
            continue
        log.debug("%s %s %s: %s in %.3fs", op.kind, instance.name, step.name, done, time.monotonic() - started)
        if not done:
            return False
        record.update(state="done", finished_at=_now_iso())
        if not op.params.get("failure"):
            op.error = ""
    if op.params.get("failure"):
        raise Fail(op.params["failure"])
    return True


def finish(op: Operation, instance: Instance, error: str = "") -> None:
    """Record the end of an operation and what it means for the instance and its secrets, at once."""
    op.finished_at = timezone.now()
    with transaction.atomic():
        if op.kind in ("backup", "verify", "restore", *moves.MOVE_KINDS):
            error = _finish_backup_kind(op, instance, error)
        if op.kind == "update" and error:
            error = _finish_failed_update(op, instance, error)
        if op.kind in ("backup", "verify") or (op.kind == "restore" and error and not op.params.get("touched")):
            # the instance is as it was: only the operation (and its snapshot) record the outcome
            op.state = OpState.FAILED if error else OpState.SUCCEEDED
            op.error = error
            if op.kind == "verify" and _torn_down(op):
                instance.delete()
                op.instance = None
            elif op.kind == "restore":
                _settle(instance)
        elif op.kind == "update" and op.params.get("rolled_back"):
            pass  # see _finish_failed_update
        elif error:
            op.state = OpState.FAILED
            for record in op.steps:
                if record["state"] == "running":
                    record["state"] = "failed"
            if op.kind == "passwd":
                # The app keeps the password it has: the instance is as it was, the new version never current.
                op.error = f"the admin password was not changed: {error}"
                op.new_secrets.filter(status=SecretStatus.PENDING).update(status=SecretStatus.FAILED)
            else:
                op.error = error
                instance.state = State.ERROR
                instance.error = error
                instance.save(update_fields=["state", "error", "updated_at"])
        else:
            op.state = OpState.SUCCEEDED
            op.error = ""
            if op.kind == "erase":
                instance.delete()
                op.instance = None
            else:
                _activate_secrets(op, instance)
                default = State.RUNNING if instance.desired_state == Desired.RUNNING else State.STOPPED
                instance.state = _END_STATE.get(op.kind, default)
                instance.error = ""
                instance.save(update_fields=["state", "error", "updated_at"])
        op.save()
    log.info("%s %s: %s%s", op.kind, op.instance_name, op.state, f" ({op.error})" if error else "")


def _finish_failed_update(op: Operation, instance: Instance, error: str) -> str:
    """A failed update: its backup, if unfinished, failed too; if the rollback ran to its end the instance
    runs as before, and the operation says what failed and what it went back to."""
    from hafen.instances.models import Snapshot, SnapshotStatus

    Snapshot.objects.filter(pk=op.params.get("backup"), status__in=(SnapshotStatus.PENDING, SnapshotStatus.RUNNING)) \
        .update(status=SnapshotStatus.FAILED, error=error, finished_at=timezone.now())
    if not op.params.get("rolled_back"):
        return error
    params = op.params
    back = params["from_version"]
    if params.get("switched"):
        op.state = OpState.ROLLED_BACK
        restored = " and the data of the backup taken before it" if params.get("plan") == updates.MIGRATING else ""
        error = f"update to {params['to_version']} failed: {error}; rolled back to {back}{restored}"
    else:
        op.state = OpState.FAILED
        error = f"update to {params['to_version']} did not start: {error}; {instance.name} runs {back} as before"
    op.error = error
    _settle(instance)
    return error


def _settle(instance: Instance) -> None:
    instance.state = State.RUNNING if instance.desired_state == Desired.RUNNING else State.STOPPED
    instance.error = ""
    instance.save(update_fields=["state", "error", "updated_at"])


def _torn_down(op: Operation) -> bool:
    return any(r["name"] == "remove-data" and r["state"] == "done" for r in op.steps)


def _finish_backup_kind(op: Operation, instance: Instance, error: str) -> str:
    """The snapshots of a backup, restore or verification at its end; return the operation's error."""
    from hafen.controller import backup_steps
    from hafen.instances.models import Snapshot, SnapshotStatus

    pending = [op.params[key] for key in ("snapshot", "safety") if op.params.get(key)]
    if error and pending:
        Snapshot.objects.filter(pk__in=pending, status__in=(SnapshotStatus.PENDING, SnapshotStatus.RUNNING)) \
            .update(status=SnapshotStatus.FAILED, error=error, finished_at=timezone.now())
    if op.kind == "verify":
        backup_steps.finish_verification(error, op.params.get("restore"))
    if error and op.kind in ("backup", "verify"):
        backup_steps.audit_failure(op, error)
    if op.kind == "restore" and not error and op.params.get("rolled_back"):
        safety = Snapshot.objects.filter(pk=op.params.get("safety")).first()
        error = (f"restore failed: {op.params['rolled_back']}; rolled back to the safety backup "
                 f"{safety.short_id if safety else ''}: the data is as it was before the restore")
        op.state = OpState.FAILED
        op.error = error
        _settle(instance)
        op.params["touched"] = False  # settled: handled like a restore that changed nothing
    return error


def _activate_secrets(op: Operation, instance: Instance) -> None:
    """The versions the operation handed to the app become current; the older ones go."""
    for secret in op.new_secrets.filter(status=SecretStatus.PENDING):
        instance.secrets.filter(name=secret.name, status=SecretStatus.ACTIVE, version__lt=secret.version).delete()
    op.new_secrets.filter(status=SecretStatus.PENDING).update(status=SecretStatus.ACTIVE)


def supersede(op: Operation, newer: Operation) -> None:
    """End an unfinished operation that a newer one takes over from; the instance is not in error."""
    op.state = OpState.SUPERSEDED
    op.error = f"superseded by {newer.kind} (operation {newer.pk})"
    op.finished_at = timezone.now()
    for record in op.steps:
        if record["state"] == "running":
            record["state"] = "superseded"
    op.save(update_fields=["state", "error", "finished_at", "steps"])
    log.info("%s %s: %s", op.kind, op.instance_name, op.error)


def backoff(op: Operation, reason: str) -> None:
    op.attempts += 1
    delay = min(2 ** op.attempts, 60)
    op.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    op.error = f"{reason} (retrying in {delay}s)"
    op.save()

