"""The reconcile loop: observe in bulk, advance operations, keep the edge in step.

One pass costs a fixed handful of engine calls, whatever the number of
instances. A problem with one instance backs that instance off; it never stops
the loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from functools import cache
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from hafen.catalog import get_app
from hafen.config import Settings
from hafen.controller import moves
from hafen.controller import operations as ops
from hafen.controller.autoscale import Autoscaler
from hafen.controller.backups import BackupScheduler
from hafen.controller.edge import EdgeReconciler
from hafen.controller.elastic import SleepKeeper
from hafen.controller.logs import LogKeeper
from hafen.controller.mail import MailReconciler
from hafen.controller.metrics import MetricsReconciler
from hafen.controller.registry import RegistryReconciler
from hafen.controller.rollouts import RolloutRunner
from hafen.edge.client import Edge
from hafen.engine.base import Engine, Observation, ServiceState
from hafen.errors import EngineError, EngineUnavailable, HafenError
from hafen.instances import updates
from hafen.instances.models import ACTIVE_STATES, ControlPlane, Desired, Instance, Operation, OpState, State
from hafen.instances.stack import render

log = logging.getLogger("hafen.controller")

# While busy, a pass every BUSY_INTERVAL seconds, or after as long a wait as the last pass took: with 100
# instances a pass takes about 0.4 s of the controller's and the engine's CPU, which ten instances waking
# at once need more (their progress is the engine's then, not the controller's).
BUSY_INTERVAL = 0.2
IDLE_INTERVAL = 2.0
# At rest (nothing has stirred for REST_AFTER seconds: no operation, no request at the edge, no event of
# the installation's containers, no instance in a change or autoscaled above its floor) a pass every
# REST_INTERVAL seconds: with 100 instances a pass costs about 0.3 s of the controller's CPU and the
# engine's answers to its listings. Whatever stirs ends the rest at once (see Controller.stir).
REST_INTERVAL = 8.0
REST_AFTER = 30.0
# The heartbeat is written at least this often, between passes too (a rest is longer): a beat older than
# services.HEARTBEAT_STALE means the controller is down.
BEAT_INTERVAL = 4.0
SETTLED = frozenset({State.RUNNING, State.SLEEPING, State.STOPPED, State.DELETED, State.ERROR, State.UNREACHABLE})


def _observed(state: ServiceState) -> dict[str, Any]:
    if state.job:
        status = "complete" if state.complete else ("failed" if state.failures else "running")
    elif state.replicas == 0:
        status = "stopped" if state.running == 0 else "stopping"
    else:
        status = "running" if state.converged() else ("failing" if state.failures else "starting")
    return {"replicas": state.replicas, "running": state.running, "state": status, "error": state.last_error}


def _reachability(instance: Instance, obs: Observation) -> str:
    """A running instance whose node does not answer is `unreachable` (not its fault, not an error); it is
    `running` again once the node is back. Any other state stays: the operations own it."""
    node = obs.nodes.get(instance.node_id)
    if node is None:
        return instance.state
    if instance.state == State.RUNNING and not node.ready:
        return State.UNREACHABLE
    if instance.state == State.UNREACHABLE and node.ready:
        return State.RUNNING
    return instance.state


@cache
def _long_running_services(app_name: str, version: str) -> frozenset[str]:
    """The services of an app's stack that should always exist while it runs (not its one-off jobs)."""
    app = get_app(app_name)
    size = next(iter(app.sizes.values()))
    template = app.render(name="drift", version=version, size=size, replicas=1, app=app)
    return frozenset(svc for svc, tpl in template.services.items() if not tpl.job)


class Controller:
    def __init__(self, engine: Engine, edge: Edge, settings: Settings) -> None:
        self.engine = engine
        self.edge = edge
        self.settings = settings
        self.edge_state = EdgeReconciler(engine, edge, settings)
        self.registry_state = RegistryReconciler(engine, settings)
        self.logs = LogKeeper(engine, settings)
        self.metrics = MetricsReconciler(engine, settings)
        self.mail_state = MailReconciler(engine, settings)
        self.stopping = threading.Event()
        self.wake = threading.Event()  # set by new work (see hafen.wake) and by stop()
        self.specs_checked = False  # once per start: see _roll_outdated
        self.backups = BackupScheduler(engine, settings)
        self.rollouts = RolloutRunner()
        self.elastic = SleepKeeper(engine, edge, settings, on_request=self.wake.set, on_traffic=self.stir)
        self.stirred_at = time.monotonic()
        self.pass_seconds = 0.0
        self.autoscaler = Autoscaler(engine, settings)
        self.elastic.watcher.log.on_entry = self.metrics.exporter.count
        self._catalogue_tags: list[str] | None = None
        self._recorded_images: dict[str, str] | None = None

    def stop(self) -> None:
        self.stopping.set()
        self.elastic.stop()
        self.wake.set()

    @property
    def resting(self) -> bool:
        return time.monotonic() - self.stirred_at >= REST_AFTER

    def stir(self) -> None:
        """Something happened (a request at the edge, an event of a container): end the rest, with a pass
        at once if the controller rested."""
        resting = self.resting
        self.stirred_at = time.monotonic()
        if resting:
            self.wake.set()

    def _stirring(self, instances: dict[str, Instance]) -> bool:
        """Whether this pass saw something that keeps the controller from resting."""
        return (any(self.elastic.open_requests.values()) if self.elastic.open_requests else False) \
            or bool(self.autoscaler.above_floor) \
            or any(i.state not in SETTLED for i in instances.values())

    def interval(self, busy: bool) -> float:
        if busy:
            return max(BUSY_INTERVAL, self.pass_seconds)
        return REST_INTERVAL if self.resting else IDLE_INTERVAL

    # -- one pass --------------------------------------------------------------------------------

    def pass_once(self) -> bool:
        """Observe, advance what is due, sync the edge; return whether work is waiting.

        The operations are read before the instances: an instance is committed together with its
        first operation, so every operation read has its instance in the later read too.
        """
        began = time.perf_counter()
        obs = self.engine.observe(self.settings.prefix)
        active = list(
            Operation.objects.filter(state__in=ACTIVE_STATES).select_related("instance").order_by("created_at", "id")
        )
        instances = {i.name: i for i in Instance.objects.select_related("organisation")}
        self._record_observation(obs, instances)
        # before any spec is rendered: an instance made before the relay gets its SMTP credentials first
        self.mail_state.reconcile(obs)
        self._advance_operations(active, obs, instances)
        busy = {op.instance_name for op in active}
        self._repair_drift(obs, instances, busy)
        if not self.specs_checked:
            self._roll_outdated(obs, instances, busy)
            self.specs_checked = True
            busy = {op.instance_name for op in Operation.objects.filter(state__in=ACTIVE_STATES)}
        self.elastic.tick(obs, instances, busy)
        active += self._start_decided(self.elastic.acted, obs)
        self.autoscaler.tick(obs, instances, busy | self.elastic.acted, self.elastic.open_requests,
                             self.elastic.policies)
        self.backups.tick(obs, active)
        self.record_images()
        started = self.rollouts.pass_once()
        moves.finish_drains(self.engine, obs)
        self.edge_state.reconcile(obs, list(Instance.objects.filter(sandbox=False).select_related("organisation")))
        pushed = self.registry_state.reconcile(obs)
        self.logs.reconcile(obs)
        self.metrics.reconcile(obs)
        if pushed:
            self.specs_checked = False  # new digests in the registry: running instances roll over to them
        busy_now = bool(active) or bool(self.edge_state.problem) or pushed or started
        if busy_now or self._stirring(instances):
            self.stirred_at = time.monotonic()
        self.pass_seconds = time.perf_counter() - began
        self.metrics.exporter.observe_pass(self.pass_seconds, obs, instances.values(), self.elastic.open_requests)
        self.heartbeat(self.pass_seconds)
        return busy_now

    def _start_decided(self, names: set[str], obs: Observation) -> list[Operation]:
        """Advance the operations this pass's sleep decisions queued at once, on this pass's observation: a
        wake's services start a pass sooner. An instance for which a user queued more work meanwhile (a stop,
        say) waits for the next pass, which sees its whole queue."""
        if not names:
            return []
        fresh = list(Operation.objects.filter(instance_name__in=names, state__in=ACTIVE_STATES)
                     .select_related("instance", "instance__organisation"))
        queued = Counter(op.instance_name for op in fresh)
        for op in fresh:
            if op.instance is not None and queued[op.instance_name] == 1:
                self._advance(op, op.instance, obs)
        return fresh

    def _record_observation(self, obs: Observation, instances: dict[str, Instance]) -> None:
        changed = []
        for instance in instances.values():
            services = {svc: _observed(state) for svc, state in obs.services_of(instance.name).items()}
            observed = {"services": services}
            state = _reachability(instance, obs)
            if observed != instance.observed or state != instance.state:
                instance.observed, instance.state = observed, state
                changed.append(instance)
        if changed:
            Instance.objects.bulk_update(changed, ["observed", "state"])

    def _advance_operations(self, active: list[Operation], obs: Observation, instances: dict[str, Instance]) -> None:
        """Advance the first unfinished operation of each instance, if its backoff has passed."""
        queues: dict[int, list[Operation]] = {}
        owners: dict[int, Instance] = {}
        for op in active:
            if op.instance is None:  # erased (an erase deletes the instance when it succeeds)
                op.state, op.error, op.finished_at = OpState.FAILED, "the instance is gone", timezone.now()
                op.save()
                continue
            queues.setdefault(op.instance.pk, []).append(op)
            owners.setdefault(op.instance.pk, op.instance)
        by_pk = {instance.pk: instance for instance in instances.values()}
        now = timezone.now()
        for pk, queue in queues.items():
            if self.stopping.is_set():
                break
            op = self._supersede(queue)
            if op.next_attempt_at > now:
                continue
            # the later read, with this pass's observation; the operation's own if that read missed it
            self._advance(op, by_pk.get(pk, owners[pk]), obs)

    @staticmethod
    def _supersede(queue: list[Operation]) -> Operation:
        """End the operations a newer one takes over from; return the one to run now."""
        while len(queue) > 1 and queue[0].kind in ops.SUPERSEDABLE:
            newer = next((op for op in queue[1:] if op.kind in ops.SUPERSEDING), None)
            if newer is None:
                break
            ops.supersede(queue.pop(0), newer)
        return queue[0]

    def _advance(self, op: Operation, instance: Instance, obs: Observation) -> None:
        """Run the operation's due steps outside any transaction (engine calls, edge probes and logs
        take seconds); its record is written once, afterwards."""
        try:
            ctx = ops.Context(self.engine, self.edge, self.edge_state, self.settings, obs, instance, op)
            if ops.advance(ctx):
                ops.finish(op, instance)
            else:
                op.attempts = 0
                op.save()
        except EngineUnavailable:
            raise  # nobody's fault: the pass stops and is retried, and the operation is not charged an attempt
        except EngineError as exc:
            if not exc.temporary:
                self._fail(op, instance, str(exc))
                return
            op.refresh_from_db()
            if op.attempts + 1 >= ops.MAX_ATTEMPTS:
                self._fail(op, instance, str(exc))
            else:
                log.warning("%s %s: %s", op.kind, instance.name, exc)
                ops.backoff(op, str(exc))
        except HafenError as exc:  # ops.Fail and any other error that says what went wrong
            self._fail(op, instance, str(exc))
        except Exception as exc:
            log.exception("%s %s: unexpected error", op.kind, instance.name)
            self._fail(op, instance, f"internal error: {exc}")

    def _fail(self, op: Operation, instance: Instance, error: str) -> None:
        # the failed pass was not saved; keep its record of which step failed, and what the steps noted
        # (an update's rollback ran to its end in it, say)
        steps, params = op.steps, op.params
        op.refresh_from_db()
        op.steps, op.params = steps, params
        instance.refresh_from_db()
        ops.finish(op, instance, error)

    def _repair_drift(self, obs: Observation, instances: dict[str, Instance], busy: set[str]) -> None:
        """Bring back services of a running instance that vanished outside hafen."""
        for instance in instances.values():
            if instance.name in busy or instance.desired_state != Desired.RUNNING or instance.sandbox:
                continue
            if instance.state != State.RUNNING:
                continue
            missing = _long_running_services(instance.app, instance.version) - set(obs.services_of(instance.name))
            if missing:
                log.warning("%s: services missing (%s), repairing", instance.name, ", ".join(sorted(missing)))
                Operation.objects.create(instance=instance, instance_name=instance.name,
                                         organisation_id=instance.organisation_id, kind="repair")

    def _roll_outdated(self, obs: Observation, instances: dict[str, Instance], busy: set[str]) -> None:
        """Running instances whose services differ from what this hafen renders for them (a new
        version of hafen changed a stack: say, the networks the web service joins) are repaired,
        which rolls them over to the new specs. Once per start: rendering every stack is not free."""
        for instance in instances.values():
            if instance.name in busy or instance.desired_state != Desired.RUNNING or instance.state != State.RUNNING:
                continue
            if instance.sandbox or instance.sleep:
                continue
            specs, _ = render(ops.stack_input(self.settings, self.engine, instance, instance.secret_versions(),
                                              running=True))
            current = obs.services_of(instance.name)
            outdated = sorted(svc for svc, spec in specs.items()
                              if not spec.job and svc in current and current[svc].spec_digest != spec.digest())
            if outdated:
                log.warning("%s: %s differ from this version's stack, rolling them over", instance.name,
                            ", ".join(outdated))
                Operation.objects.create(instance=instance, instance_name=instance.name,
                                         organisation_id=instance.organisation_id, kind="repair")

    def heartbeat(self, pass_seconds: float = 0.0) -> None:
        status = self.edge_state.applied.get("status", "")
        ControlPlane.objects.update_or_create(
            pk=1, defaults={"pid": os.getpid(), "beat_at": timezone.now(), "edge_config": status,
                            "pass_seconds": round(pass_seconds, 4), "resting": self.resting}
        )

    def rest_until(self, deadline: float) -> None:
        """Wait until `deadline` or until woken, beating every BEAT_INTERVAL seconds meanwhile."""
        while not self.wake.wait(max(0.0, min(BEAT_INTERVAL, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return
            ControlPlane.objects.filter(pk=1).update(beat_at=timezone.now(), resting=self.resting)

    def record_images(self) -> None:
        """The image id of every tag of the catalogue, for the pages that say an update is there (the engine
        caches its answers for a few seconds, so this costs little per pass)."""
        if self._catalogue_tags is None:
            self._catalogue_tags = sorted(updates.catalogue_tags())
        images = {tag: self.engine.image_id(tag) for tag in self._catalogue_tags}
        if images != self._recorded_images:
            ControlPlane.objects.update_or_create(pk=1, defaults={"images": images})
            self._recorded_images = images

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        ControlPlane.objects.update_or_create(pk=1, defaults={"pid": os.getpid(), "started_at": timezone.now()})
        self.logs.start()
        log.info("controller: started (pid %d, prefix %s, database %s)", os.getpid(), self.settings.prefix,
                 self.settings.database_display)
        unavailable = False
        self.elastic.start()
        threading.Thread(target=self.engine.watch, args=(self.settings.prefix, self.stir, self.stopping),
                         daemon=True, name="engine-events").start()
        while not self.stopping.is_set():
            try:
                busy = self.pass_once()
                if unavailable:
                    log.info("controller: the Docker engine answers again")
                unavailable = False
            except EngineUnavailable as exc:
                if not unavailable:
                    log.error("controller: %s", exc)
                unavailable = True
                busy = False
            except Exception:
                log.exception("controller: pass failed")
                # a connection the database dropped (PostgreSQL restarted, say) is replaced on the next pass
                close_old_connections()
                busy = False
            self.rest_until(time.monotonic() + self.interval(busy))
            self.wake.clear()
        ControlPlane.objects.filter(pk=1).update(beat_at=None)
        log.info("controller: stopped")
        self.logs.shutdown()
