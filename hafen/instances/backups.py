"""The service layer of backups: back up, list, restore (in place or into a new instance), clone,
verify, and the backup policies.

Like services.py: every call asks the policy, checks locks, writes the audit entry and records the
work (a snapshot and an operation) in one transaction; the controller does the rest.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from hafen import crypto, wake
from hafen.access import audit, policy
from hafen.access.models import Organisation
from hafen.access.policy import Action, Actor
from hafen.backup import schedule
from hafen.backup.retention import Keep
from hafen.catalog import get_app
from hafen.config import get_settings
from hafen.errors import Conflict, InvalidInput, NotFound
from hafen.instances import elastic, services, validation
from hafen.instances.models import (
    BackupPolicy,
    Desired,
    Instance,
    InstanceSecret,
    Operation,
    Repository,
    Snapshot,
    SnapshotStatus,
    State,
    Verification,
)

STALE_AFTER = timedelta(hours=48)  # an instance without a verified backup this long is flagged
DEFAULT_POLICY = {"schedule": "0 2 * * *", "enabled": True, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6}


@dataclass(frozen=True)
class Policy:
    schedule: str
    enabled: bool
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    scope: str  # installation, organisation or instance: where it was set

    @classmethod
    def of(cls, row: BackupPolicy | None, scope: str) -> Policy:
        if row is None:
            return cls(scope=scope, **DEFAULT_POLICY)  # type: ignore[arg-type]
        return cls(row.schedule, row.enabled, row.keep_daily, row.keep_weekly, row.keep_monthly, scope)

    def describe(self, name: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"schedule": self.schedule, "enabled": self.enabled, "keep_daily": self.keep_daily,
                                "keep_weekly": self.keep_weekly, "keep_monthly": self.keep_monthly,
                                "set_for": self.scope}
        if name is not None:
            data["next_backup"] = schedule.next_run(self.schedule, name, timezone.now()).isoformat() \
                if self.enabled else None
        return data


def effective_policies(instances: list[Instance]) -> dict[int | None, Policy]:
    """The policy that applies to each instance (by pk), and the installation's (key None)."""
    rows = list(BackupPolicy.objects.filter(
        Q(instance__in=instances) | Q(organisation_id__in={i.organisation_id for i in instances})
        | Q(instance__isnull=True, organisation__isnull=True)))
    installation = next((r for r in rows if r.instance_id is None and r.organisation_id is None), None)
    base = Policy.of(installation, "installation")
    by_org = {r.organisation_id: r for r in rows if r.organisation_id is not None}
    by_instance = {r.instance_id: r for r in rows if r.instance_id is not None}
    result: dict[int | None, Policy] = {None: base}
    for instance in instances:
        if instance.pk in by_instance:
            result[instance.pk] = Policy.of(by_instance[instance.pk], "instance")
        elif instance.organisation_id in by_org:
            result[instance.pk] = Policy.of(by_org[instance.organisation_id], "organisation")
        else:
            result[instance.pk] = base
    return result


# -- work for the controller ---------------------------------------------------------------------


def enqueue(instance: Instance, kind: str, params: dict[str, Any]) -> Operation:
    elastic.wake_for(instance, kind)
    operation = Operation.objects.create(instance=instance, instance_name=instance.name,
                                         organisation_id=instance.organisation_id, kind=kind, params=params)
    transaction.on_commit(lambda: wake.notify(get_settings().wake_path))
    return operation


def new_snapshot(instance: Instance, reason: str) -> Snapshot:
    return Snapshot.objects.create(instance=instance, instance_name=instance.name,
                                   organisation_id=instance.organisation_id, reason=reason, app=instance.app,
                                   version=instance.version, domain=instance.domain)


def queue_backup(instance: Instance, reason: str) -> Operation:
    with transaction.atomic():
        snapshot = new_snapshot(instance, reason)
        return enqueue(instance, "backup", {"snapshot": snapshot.pk})


def _new_instance(name: str, app: str, version: str, domain: str, size: str, organisation_id: int | None,
                  sandbox: bool = False) -> Instance:
    app_def = get_app(app)
    instance = Instance.objects.create(name=name, app=app, version=version, domain=domain, size=size,
                                       organisation_id=organisation_id, sandbox=sandbox,
                                       replicas=1 if sandbox else app_def.sizes[size].web_replicas)
    InstanceSecret.objects.bulk_create(
        InstanceSecret(instance=instance, name=s, ciphertext=crypto.encrypt(services.secret_value(s)))
        for s in app_def.secrets
    )
    return instance


def queue_verification(snapshot: Snapshot) -> Operation:
    """Restore the snapshot into a new sandbox (no edge, no way off the host) and check it there."""
    with transaction.atomic():
        locked = Snapshot.objects.select_for_update().get(pk=snapshot.pk)
        name = f"sbx-{locked.pk}-{secrets.token_hex(3)}"
        sandbox = _new_instance(name, locked.app, locked.version, f"{name}.sandbox.invalid", "small",
                                locked.organisation_id, sandbox=True)
        locked.verification = Verification.VERIFYING
        locked.verification_error = ""
        locked.save(update_fields=["verification", "verification_error"])
        return enqueue(sandbox, "verify", {"restore": locked.pk})


# -- what users do -------------------------------------------------------------------------------


def require_running(instance: Instance, doing: str) -> None:
    if instance.desired_state != Desired.RUNNING:
        raise Conflict(f"{instance.name} is to be {instance.desired_state}; {doing} needs it running")
    if instance.state not in (State.RUNNING, State.ERROR, State.SLEEPING, State.WAKING):  # a sleeper wakes first
        raise Conflict(f"{instance.name} is {instance.state}; {doing} needs it running")


def backup(actor: Actor, name: str) -> Operation:
    with audit.audited(actor, Action.BACKUP, name) as note:
        instance = services.authorized(actor, Action.BACKUP, name, note)
        require_running(instance, "a backup")
        services.require_control_plane()
        operation = queue_backup(instance, "manual")
        note.operation_id = operation.id
        return operation


def _snapshots_of(actor: Actor, name: str) -> QuerySet[Snapshot]:
    return Snapshot.objects.filter(policy.instance_filter(actor), instance_name=name)


def snapshots(actor: Actor, name: str) -> list[Snapshot]:
    """The backups of an instance, newest first; also of an erased one (by its name)."""
    found = _snapshots_of(actor, name).exclude(status=SnapshotStatus.FORGOTTEN)
    if not found.exists() and not services.instances_of(actor).filter(name=name).exists():
        raise NotFound(f"no instance named {name!r} and no backups of one")
    return list(found)


def resolve(actor: Actor, name: str, ref: str, action: Action) -> Snapshot:
    """A snapshot of `name` by its id (8 or more hex digits of it) or `latest`, that the actor may
    `action`; only one that succeeded."""
    ref = ref.strip().lower()
    found = _snapshots_of(actor, name).filter(status=SnapshotStatus.OK)
    if ref == "latest":
        snapshot = found.first()
    else:
        if len(ref) < 8 or any(c not in "0123456789abcdef" for c in ref):
            raise InvalidInput(f"a snapshot is `latest` or 8 or more hex digits of its id, not {ref!r}")
        matches = list(found.filter(restic_id__startswith=ref)[:2])
        if len(matches) > 1:
            raise InvalidInput(f"{ref} names more than one snapshot; give more of its id")
        snapshot = matches[0] if matches else None
    if snapshot is None:
        raise NotFound(f"no backup {ref} of {name}" + (" (see `hafen backups NAME`)" if ref != "latest" else ""))
    policy.check(actor, action, snapshot.organisation_id, f"backup {ref} of {name}")
    return snapshot


def restore(actor: Actor, name: str, ref: str, confirm: str | None = None) -> Operation:
    """Restore a backup in place: a safety backup first, then the data is replaced.

    `confirm`: the instance's name as the user typed it (UI, API); None where it was asked before (CLI).
    """
    with audit.audited(actor, Action.RESTORE, name, snapshot=ref) as note:
        instance = services.authorized(actor, Action.RESTORE, name, note)
        if confirm is not None and confirm.strip() != name:
            raise InvalidInput(f"type the name {name} to restore it in place; nothing was changed")
        snapshot = resolve(actor, name, ref, Action.RESTORE)
        note.detail["snapshot"] = snapshot.short_id
        if snapshot.app != instance.app:
            raise Conflict(f"the backup is of a {snapshot.app} instance; {name} is {instance.app}")
        require_running(instance, "a restore in place")
        services.require_control_plane()
        with transaction.atomic():
            safety = new_snapshot(instance, "safety")
            operation = enqueue(instance, "restore", {"restore": snapshot.pk, "safety": safety.pk})
        note.operation_id = operation.id
        return operation


def _target(actor: Actor, new: str, app: str, version: str, domain: str | None, organisation: str | None,
            default_org: Organisation | None) -> tuple[str, str, Organisation | None]:
    new = validation.name(new)
    settings = get_settings()
    domain = validation.domain(domain or f"{new}.{settings.domain_suffix}", settings.prefix)
    org = services.organisation_for_create(actor, organisation) if organisation or default_org is None \
        else default_org
    if org is not None:
        policy.check(actor, Action.CREATE, org.id, f"organisation {org.slug!r}")
    if Instance.objects.filter(name=new).exists():
        raise Conflict(f"an instance named {new!r} exists already")
    if Instance.objects.filter(domain=domain).exists():
        raise Conflict(f"the domain {domain} is taken by another instance")
    services.require_images(app, version)
    services.require_control_plane()
    return new, domain, org


def restore_into(actor: Actor, name: str, ref: str, new: str, domain: str | None = None,
                 organisation: str | None = None) -> Operation:
    """A new instance with new secrets and the data of a backup (of `name`, which may be erased)."""
    with audit.audited(actor, Action.RESTORE, name, snapshot=ref, into=new) as note:
        snapshot = resolve(actor, name, ref, Action.RESTORE)
        note.organisation_id = snapshot.organisation_id
        note.detail["snapshot"] = snapshot.short_id
        new, domain, org = _target(actor, new, snapshot.app, snapshot.version, domain, organisation,
                                   snapshot.organisation)
        note.detail.update(domain=domain)
        operation = _create_restored(new, domain, "small", org, lambda: snapshot)
        note.operation_id = operation.id
        return operation


def _create_restored(new: str, domain: str, size: str, org: Organisation | None,
                     snapshot: Callable[[], Snapshot]) -> Operation:
    """A new instance whose create restores the snapshot `snapshot()` returns (made in the same transaction)."""
    try:
        with transaction.atomic():
            source = snapshot()
            instance = _new_instance(new, source.app, source.version, domain, size, org.id if org else None)
            return enqueue(instance, "create", {"restore": source.pk})
    except IntegrityError as exc:
        raise Conflict(f"the name {new!r} or domain {domain} was taken at the same moment") from exc


def clone(actor: Actor, name: str, new: str, domain: str | None = None, organisation: str | None = None
          ) -> Operation:
    """Back up `name` now and restore that backup into a new instance; return the new one's create."""
    with audit.audited(actor, "clone", name, into=new) as note:
        source = services.authorized(actor, Action.BACKUP, name, note)
        require_running(source, "a clone")
        new, domain, org = _target(actor, new, source.app, source.version, domain, organisation,
                                   source.organisation)
        note.detail.update(domain=domain)

        def backup_now() -> Snapshot:
            snapshot = new_snapshot(source, "clone")
            enqueue(source, "backup", {"snapshot": snapshot.pk})
            return snapshot

        operation = _create_restored(new, domain, source.size, org, backup_now)
        note.operation_id = operation.id
        return operation


def verify(actor: Actor, name: str, ref: str = "latest") -> Operation:
    with audit.audited(actor, "verify", name, snapshot=ref) as note:
        snapshot = resolve(actor, name, ref, Action.BACKUP)
        note.organisation_id = snapshot.organisation_id
        note.detail["snapshot"] = snapshot.short_id
        if snapshot.verification == Verification.VERIFYING:
            raise Conflict(f"backup {snapshot.short_id} of {name} is being verified now")
        services.require_images(snapshot.app, snapshot.version)
        services.require_control_plane()
        operation = queue_verification(snapshot)
        note.operation_id = operation.id
        return operation


# -- policies ------------------------------------------------------------------------------------


def set_policy(actor: Actor, *, name: str | None = None, organisation: str | None = None,
               schedule_expr: str | None = None, keep_daily: int | None = None, keep_weekly: int | None = None,
               keep_monthly: int | None = None, enabled: bool | None = None) -> Policy:
    """Set the backup policy of an instance, an organisation, or (neither given) the installation."""
    target = name or (f"organisation {organisation}" if organisation else "installation")
    with audit.audited(actor, "backup-policy", name or "", target=target) as note:
        if schedule_expr is not None:
            schedule_expr = schedule.validate_cron(schedule_expr)
        Keep(daily=keep_daily or 0, weekly=keep_weekly or 0, monthly=keep_monthly or 0)  # validates
        lookup: dict[str, Any]
        if name:
            instance = services.authorized(actor, Action.BACKUP, name, note)
            lookup, current = {"instance": instance}, effective_policies([instance])[instance.pk]
        elif organisation:
            org = Organisation.objects.filter(policy.organisation_filter(actor), slug=organisation).first()
            if org is None:
                raise NotFound(f"no organisation {organisation!r}")
            note.organisation_id = org.id
            policy.check(actor, Action.BACKUP, org.id, f"organisation {organisation!r}")
            row = BackupPolicy.objects.filter(organisation=org).first()
            lookup = {"organisation": org}
            current = Policy.of(row, "organisation") if row else effective_policies([])[None]
        else:
            policy.check(actor, Action.MANAGE_ORGANISATIONS, None, "installation")
            lookup, current = {"instance": None, "organisation": None}, effective_policies([])[None]
        values = {
            "schedule": schedule_expr or current.schedule,
            "enabled": current.enabled if enabled is None else enabled,
            "keep_daily": current.keep_daily if keep_daily is None else keep_daily,
            "keep_weekly": current.keep_weekly if keep_weekly is None else keep_weekly,
            "keep_monthly": current.keep_monthly if keep_monthly is None else keep_monthly,
        }
        note.detail.update(values)
        row, _ = BackupPolicy.objects.update_or_create(**lookup, defaults=values)
        scope = "instance" if name else "organisation" if organisation else "installation"
        return Policy.of(row, scope)


# -- descriptions --------------------------------------------------------------------------------


def describe_snapshot(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "id": snapshot.short_id,
        "restic_id": snapshot.restic_id,
        "instance": snapshot.instance_name,
        "reason": snapshot.reason,
        "status": snapshot.status,
        "error": snapshot.error,
        "created_at": snapshot.created_at.isoformat(),
        "finished_at": snapshot.finished_at.isoformat() if snapshot.finished_at else None,
        "size": snapshot.total_bytes,
        "added": snapshot.added_bytes,
        "app": snapshot.app,
        "version": snapshot.version,
        "verification": snapshot.verification,
        "verification_error": snapshot.verification_error,
        "verified_at": snapshot.verified_at.isoformat() if snapshot.verified_at else None,
        "fingerprint": snapshot.manifest.get("fingerprint"),
    }


def status(instances: list[Instance]) -> dict[int, dict[str, Any]]:
    """Per instance: its last backup, its last verified one, and what is wrong (in two queries)."""
    rows = Snapshot.objects.filter(instance__in=instances).exclude(reason="safety").order_by("-created_at", "-id")
    latest: dict[int, Snapshot] = {}
    verified: dict[int, Snapshot] = {}
    failed_verification: dict[int, Snapshot] = {}
    for snapshot in rows.only("instance_id", "status", "error", "created_at", "verification", "verified_at",
                              "verification_error", "restic_id", "reason"):
        key = snapshot.instance_id
        if key is None:
            continue
        latest.setdefault(key, snapshot)
        if snapshot.verification == Verification.VERIFIED:
            verified.setdefault(key, snapshot)
        elif snapshot.verification == Verification.FAILED and key not in verified:
            failed_verification.setdefault(key, snapshot)
    now = timezone.now()
    result: dict[int, dict[str, Any]] = {}
    for instance in instances:
        last, good, bad = latest.get(instance.pk), verified.get(instance.pk), failed_verification.get(instance.pk)
        problems = []
        if last is not None and last.status == SnapshotStatus.FAILED:
            problems.append(f"the last backup failed: {last.error}")
        if bad is not None:
            problems.append(f"verification of backup {bad.short_id} failed: {bad.verification_error}")
        stale = good is None or now - good.created_at > STALE_AFTER
        if stale and (good is not None or now - instance.created_at > STALE_AFTER):
            problems.append("no verified backup in the last 48 hours")
        result[instance.pk] = {
            "last_backup": last.created_at.isoformat() if last else None,
            "last_backup_status": last.status if last else None,
            "last_verified": good.created_at.isoformat() if good else None,
            "last_verified_id": good.short_id if good else None,
            "problems": problems,
        }
    return result


def repository(actor: Actor) -> dict[str, Any]:
    """Where backups go, and (for operators) the state of the repository's maintenance."""
    settings = get_settings()
    state = Repository.objects.filter(pk=1).first()
    data: dict[str, Any] = {"repository": settings.repository_display,
                            "off_host": settings.local_repository is None}
    if state is not None and actor.is_operator:
        data.update(
            last_check=state.last_check_at.isoformat() if state.last_check_at else None,
            check_ok=state.check_ok, check_message=state.check_message,
            last_prune=state.last_prune_at.isoformat() if state.last_prune_at else None,
            maintenance_running=bool(state.maintenance_run), error=state.error,
        )
    return data


def request_maintenance(actor: Actor) -> None:
    with audit.audited(actor, "repository-check"):
        policy.check(actor, Action.MANAGE_ORGANISATIONS, None, "repository")
        services.require_control_plane()
        Repository.objects.update_or_create(pk=1, defaults={"maintenance_requested": True})
        transaction.on_commit(lambda: wake.notify(get_settings().wake_path))


def describe_all(instances: list[Instance]) -> list[dict[str, Any]]:
    """Instances as `services.describe` has them, each with the state of its backups and what it can be
    updated to."""
    from hafen.instances.updates import offers

    states, updates = status(instances), offers(instances)
    return [{**services.describe(i), "backups": states[i.pk], "update": updates[i.pk].describe()} for i in instances]


def listing(actor: Actor, name: str) -> dict[str, Any]:
    """The backups of an instance (or of an erased one), with its policy and where backups go."""
    found = snapshots(actor, name)
    instance = services.instances_of(actor).filter(name=name).first()
    return {
        "instance": name,
        "items": [describe_snapshot(s) for s in found],
        "policy": effective_policies([instance])[instance.pk].describe(name) if instance else None,
        "status": status([instance])[instance.pk] if instance else None,
        "repository": repository(actor),
    }


def get_policy(actor: Actor, *, name: str | None = None, organisation: str | None = None) -> dict[str, Any]:
    if name:
        instance = services.authorized(actor, Action.VIEW, name)
        return effective_policies([instance])[instance.pk].describe(name)
    if organisation:
        org = Organisation.objects.filter(policy.organisation_filter(actor), slug=organisation).first()
        if org is None:
            raise NotFound(f"no organisation {organisation!r}")
        row = BackupPolicy.objects.filter(organisation=org).first()
        return (Policy.of(row, "organisation") if row else effective_policies([])[None]).describe()
    return effective_policies([])[None].describe()
