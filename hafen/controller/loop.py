"""The reconcile loop: observe in bulk, advance operations, keep the edge in step.

One pass costs a fixed handful of engine calls, whatever the number of
instances. A problem with one instance backs that instance off; it never stops
the loop.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.db import transaction
from django.utils import timezone

from hafen.catalog import get_app
from hafen.config import Settings
from hafen.controller import operations as ops
from hafen.controller.edge import EdgeReconciler
from hafen.edge.client import Edge
from hafen.engine.base import Engine, Observation, ServiceState
from hafen.errors import EngineError, EngineUnavailable
from hafen.instances.models import ControlPlane, Desired, Instance, Operation, OpState, State

log = logging.getLogger("hafen.controller")

BUSY_INTERVAL = 0.2
IDLE_INTERVAL = 2.0


def _observed(state: ServiceState) -> dict[str, Any]:
    if state.job:
        status = "complete" if state.complete else ("failed" if state.failures else "running")
    elif state.replicas == 0:
        status = "stopped" if state.running == 0 else "stopping"
    else:
        status = "running" if state.converged() else ("failing" if state.failures else "starting")
    return {"replicas": state.replicas, "running": state.running, "state": status, "error": state.last_error}


class Controller:
    def __init__(self, engine: Engine, edge: Edge, settings: Settings) -> None:
        self.engine = engine
        self.edge = edge
        self.settings = settings
        self.edge_state = EdgeReconciler(engine, edge, settings)
        self.stopping = threading.Event()
        self.wake = threading.Event()  # set by new work (see hafen.wake) and by stop()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    # -- one pass --------------------------------------------------------------------------------

    def pass_once(self) -> bool:
        """Observe, advance what is due, sync the edge; return whether work is waiting."""
        obs = self.engine.observe(self.settings.prefix)
        instances = {i.name: i for i in Instance.objects.all()}
        self._record_observation(obs, instances)
        active = list(
            Operation.objects.filter(state__in=[OpState.PENDING, OpState.RUNNING]).order_by("created_at", "id")
        )
        self._advance_operations(active, obs, instances)
        self._repair_drift(obs, instances, busy={op.instance_name for op in active})
        self.edge_state.reconcile(obs, list(Instance.objects.all()))
        self.heartbeat()
        return bool(active) or bool(self.edge_state.problem)

    def _record_observation(self, obs: Observation, instances: dict[str, Instance]) -> None:
        changed = []
        for instance in instances.values():
            services = {svc: _observed(state) for svc, state in obs.services_of(instance.name).items()}
            observed = {"services": services}
            if observed != instance.observed:
                instance.observed = observed
                changed.append(instance)
        if changed:
            Instance.objects.bulk_update(changed, ["observed"])

    def _advance_operations(self, active: list[Operation], obs: Observation, instances: dict[str, Instance]) -> None:
        """Advance the oldest unfinished operation of each instance, if its backoff has passed."""
        first: dict[str, Operation] = {}
        for op in active:
            first.setdefault(op.instance_name, op)
        now = timezone.now()
        for op in (op for op in first.values() if op.next_attempt_at <= now):
            if self.stopping.is_set():
                break
            # An instance created after this pass read the instances has its operation read too.
            instance = instances.get(op.instance_name) or Instance.objects.filter(name=op.instance_name).first()
            if instance is None:
                op.state, op.error, op.finished_at = OpState.FAILED, "the instance is gone", timezone.now()
                op.save()
                continue
            self._advance(op, instance, obs)

    def _advance(self, op: Operation, instance: Instance, obs: Observation) -> None:
        try:
            with transaction.atomic():
                ctx = ops.Context(self.engine, self.edge, self.edge_state, self.settings, obs, instance, op)
                if ops.advance(ctx):
                    ops.finish(op, instance)
                else:
                    op.attempts = 0
                    op.save()
        except ops.Fail as exc:
            self._fail(op, instance, str(exc))
        except EngineUnavailable:
            raise
        except EngineError as exc:
            op.refresh_from_db()
            if op.attempts + 1 >= ops.MAX_ATTEMPTS:
                self._fail(op, instance, str(exc))
            else:
                log.warning("%s %s: %s", op.kind, instance.name, exc)
                ops.backoff(op, str(exc))
        except Exception as exc:
            log.exception("%s %s: unexpected error", op.kind, instance.name)
            self._fail(op, instance, f"internal error: {exc}")

    def _fail(self, op: Operation, instance: Instance, error: str) -> None:
        steps = op.steps  # the failed pass was rolled back; keep its record of which step failed
        op.refresh_from_db()
        op.steps = steps
        instance.refresh_from_db()
        ops.finish(op, instance, error)

    def _repair_drift(self, obs: Observation, instances: dict[str, Instance], busy: set[str]) -> None:
        """Bring back services of a running instance that vanished outside hafen."""
        for instance in instances.values():
            if instance.name in busy or instance.desired_state != Desired.RUNNING:
                continue
            if instance.state != State.RUNNING:
                continue
            if get_app(instance.app).web_service not in obs.services_of(instance.name):
                log.warning("%s: services missing, repairing", instance.name)
                Operation.objects.create(instance=instance, instance_name=instance.name,
                                         organisation_id=instance.organisation_id, kind="repair")

    def heartbeat(self) -> None:
        status = self.edge_state.applied.get("status", "")
        ControlPlane.objects.update_or_create(
            pk=1, defaults={"pid": os.getpid(), "beat_at": timezone.now(), "edge_config": status}
        )

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        ControlPlane.objects.update_or_create(pk=1, defaults={"pid": os.getpid(), "started_at": timezone.now()})
        log.info("controller: started (pid %d, prefix %s)", os.getpid(), self.settings.prefix)
        unavailable = False
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
                busy = False
            self.wake.wait(BUSY_INTERVAL if busy else IDLE_INTERVAL)
            self.wake.clear()
        ControlPlane.objects.filter(pk=1).update(beat_at=None)
        log.info("controller: stopped")
