"""Backups on schedule, and the repository's maintenance (retention, prune, check).

Every 15 seconds the scheduler queues the backups that are due (each instance at its own point
of its policy's window, at most HAFEN_BACKUP_CONCURRENCY backups and verifications at once), and,
when nothing else uses the repository, runs the maintenance job on its own schedule: forget what
the retention policies no longer keep, prune, and check a rotating part of the data. It also erases
a verification's sandbox that outlived its operation.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from hafen.backup import schedule
from hafen.backup.retention import Keep, to_forget
from hafen.config import Settings
from hafen.controller.backup_jobs import JobFailed, Repository, outcome
from hafen.engine.base import Engine, Observation
from hafen.errors import EngineUnavailable, HafenError
from hafen.instances import naming
from hafen.instances.backups import effective_policies, queue_backup
from hafen.instances.models import (
    Desired,
    Instance,
    Operation,
    OpState,
    Sleep,
    Snapshot,
    SnapshotStatus,
    State,
)
from hafen.instances.models import Repository as RepositoryState

log = logging.getLogger("hafen.backups")

# Seconds between ticks: schedules have minutes, and a tick costs ~30 ms per 200 instances (bench.backup_scheduler).
INTERVAL = 15.0
MAINTENANCE_SCHEDULE = "30 4 * * *"
CHECK_PARTS = 7  # a check reads 1/7 of the data, a different seventh each time
REPOSITORY_USERS = ("backup", "verify", "restore")


class BackupScheduler:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.last = 0.0

    def tick(self, obs: Observation, active: list[Operation]) -> None:
        if time.monotonic() - self.last < INTERVAL:
            return
        self.last = time.monotonic()
        try:
            repository, made = RepositoryState.objects.get_or_create(pk=1)
            if made or repository.last_maintenance_at is None:
                # the first maintenance comes at its schedule's next slot, not right after the first backup
                repository.last_maintenance_at = timezone.now()
                repository.save(update_fields=["last_maintenance_at"])
            # read now: this pass's operations may have queued more (a verification after a backup)
            busy = list(Operation.objects.filter(kind__in=REPOSITORY_USERS, state__in=(OpState.PENDING,
                                                                                      OpState.RUNNING)))
            self._maintenance(obs, repository, busy)
            if not repository.maintenance_run:
                self._schedule(active, busy)
            self._sweep_sandboxes(active)
        except EngineUnavailable:
            raise
        except HafenError as exc:
            log.warning("backups: %s", exc)

    # -- scheduled backups -----------------------------------------------------------------------

    def _schedule(self, active: list[Operation], busy: list[Operation]) -> None:
        room = self.settings.backup_concurrency - sum(1 for op in busy if op.kind in ("backup", "verify"))
        if room <= 0:
            return
        working = {op.instance_name for op in active}
        # a light sleeper's database runs (and its last writes may not be backed up yet); a deep sleeper
        # went deep only once they were (see controller/elastic.py)
        awake_or_light = Q(state=State.RUNNING) | Q(state=State.SLEEPING, sleep=Sleep.LIGHT)
        instances = [i for i in Instance.objects.filter(awake_or_light, sandbox=False, desired_state=Desired.RUNNING)
                     if i.name not in working]
        if not instances:
            return
        policies = effective_policies(instances)
        stats = {row["instance_id"]: row for row in Snapshot.objects.filter(instance__in=instances)
                 .values("instance_id").annotate(last=Max("created_at"),
                                                 last_ok=Max("created_at", filter=Q(status=SnapshotStatus.OK)))}
        now = timezone.now()
        due: list[tuple[Any, Instance]] = []
        for instance in instances:
            policy = policies[instance.pk]
            if not policy.enabled:
                continue
            row = stats.get(instance.pk, {})
            if schedule.is_due(policy.schedule, instance.name, created=instance.created_at,
                               last_success=row.get("last_ok"), last_attempt=row.get("last"), now=now):
                due.append((schedule.current_slot(policy.schedule, instance.name, now), instance))
        for _, instance in sorted(due, key=lambda item: (item[0], item[1].name))[:room]:
            log.info("backups: %s is due", instance.name)
            queue_backup(instance, reason="scheduled")

    # -- maintenance -----------------------------------------------------------------------------

    def _maintenance(self, obs: Observation, repository: RepositoryState, busy: list[Operation]) -> None:
        name = naming.maintenance_service(self.settings.prefix)
        if repository.maintenance_run:
            self._follow(obs, repository, name)
            return
        if busy or not Snapshot.objects.filter(status=SnapshotStatus.OK).exists():
            return
        now = timezone.now()
        slot = schedule.current_slot(MAINTENANCE_SCHEDULE, "repository", now)
        last = repository.last_maintenance_at
        due = repository.maintenance_requested or (slot is not None and last is not None and last < slot)
        if due:
            self._start(obs, repository, name)

    def _retention(self) -> list[Snapshot]:
        """The snapshots that no policy keeps any longer."""
        snapshots = list(Snapshot.objects.filter(status=SnapshotStatus.OK).select_related("instance"))
        groups: dict[str, list[Snapshot]] = {}
        for snapshot in snapshots:
            groups.setdefault(snapshot.instance_name, []).append(snapshot)
        instances = [s.instance for s in snapshots if s.instance is not None]
        policies = effective_policies(list({i.pk: i for i in instances}.values()))
        installation = effective_policies([])[None]
        forget: list[Snapshot] = []
        for group in groups.values():
            owner = group[0].instance
            policy = policies[owner.pk] if owner is not None else installation
            keep = Keep(daily=policy.keep_daily, weekly=policy.keep_weekly, monthly=policy.keep_monthly)
            ids = to_forget([(str(s.pk), s.created_at) for s in group], keep)
            forget += [s for s in group if str(s.pk) in ids]
        return forget

    def _start(self, obs: Observation, repository: RepositoryState, name: str) -> None:
        forget = self._retention()
        part = repository.check_subset % CHECK_PARTS + 1
        ids = [i for s in forget for i in (s.restic_id, s.db_snapshot_id) if i]
        maintain = f"hafen-backup maintain --prune --check --read-data-subset {part}/{CHECK_PARTS}"
        script = f'hafen-backup forget "$@" && exec {maintain}' if ids else f"exec {maintain}"
        run = uuid.uuid4().hex[:12]
        repo = Repository(self.settings)
        repo.ensure(self.engine, obs)
        spec = repo.spec(name, {**naming.labels(self.settings.prefix), "hafen.run": run},
                         ["sh", "-c", script, "hafen-backup", *ids], env={})
        with transaction.atomic():
            repository.maintenance_run = run
            repository.maintenance_started_at = timezone.now()
            repository.maintenance_forget = [s.pk for s in forget]
            repository.maintenance_requested = False
            repository.check_subset = part
            repository.save()
        self.engine.apply_service(spec, obs.services.get(name))
        log.info("backups: repository maintenance started (forget %d snapshots, check part %d/%d)",
                 len(forget), part, CHECK_PARTS)

    def _follow(self, obs: Observation, repository: RepositoryState, name: str) -> None:
        state = obs.services.get(name)
        if state is None or state.labels.get("hafen.run") != repository.maintenance_run:
            started = repository.maintenance_started_at
            if started is None or (timezone.now() - started).total_seconds() > 60:
                self._end(repository, error="the maintenance job vanished")
            return
        try:
            result = outcome(self.engine, state, None, tail_progress=False)
        except JobFailed as exc:
            self._end(repository, error=str(exc))
            self.engine.remove_service(name)
            return
        if not result.done or result.result is None:
            return
        data = result.result
        check = data.get("check") or {}
        with transaction.atomic():
            Snapshot.objects.filter(pk__in=repository.maintenance_forget).update(status=SnapshotStatus.FORGOTTEN)
            now = timezone.now()
            repository.last_prune_at = now if data.get("prune") else repository.last_prune_at
            repository.last_check_at = now
            repository.check_ok = bool(check.get("ok"))
            repository.check_message = str(check.get("message") or "")
            self._end(repository, error="")
        self.engine.remove_service(name)
        log.info("backups: repository maintenance done: check %s", "ok" if repository.check_ok else "FAILED")

    @staticmethod
    def _end(repository: RepositoryState, error: str) -> None:
        repository.maintenance_run = ""
        repository.maintenance_forget = []
        repository.last_maintenance_at = timezone.now()
        repository.error = error
        # not maintenance_requested: a request made while this maintenance ran stays for the next one
        repository.save(update_fields=["maintenance_run", "maintenance_forget", "last_maintenance_at", "error",
                                       "last_prune_at", "last_check_at", "check_ok", "check_message"])
        if error:
            log.warning("backups: repository maintenance failed: %s", error)

    # -- sandboxes -------------------------------------------------------------------------------

    @staticmethod
    def _sweep_sandboxes(active: list[Operation]) -> None:
        """A sandbox whose verification ended without removing it (its teardown failed) is erased."""
        working = {op.instance_name for op in active}
        for sandbox in Instance.objects.filter(sandbox=True).exclude(name__in=working):
            if Operation.objects.filter(instance=sandbox, state__in=(OpState.PENDING, OpState.RUNNING)).exists():
                continue
            log.info("backups: erasing the leftover sandbox %s", sandbox.name)
            with transaction.atomic():
                sandbox.desired_state = Desired.ERASED
                sandbox.save(update_fields=["desired_state", "updated_at"])
                Operation.objects.create(instance=sandbox, instance_name=sandbox.name,
                                         organisation_id=sandbox.organisation_id, kind="erase")
