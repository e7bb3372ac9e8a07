"""The service layer: what the CLI, the API and the UI may do to instances.

Each call validates, writes desired state and an operation in one
transaction, and returns; the controller does the work. Nothing here talks to
the engine except read-only checks (is it up, is an image there) and logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q, QuerySet
from django.utils import timezone

from hafen import crypto, wake
from hafen.access import audit, policy
from hafen.access.models import Organisation
from hafen.access.policy import Action, Actor
from hafen.catalog import get_app
from hafen.config import get_settings
from hafen.engine import get_engine
from hafen.errors import (
    Conflict,
    ControlPlaneDown,
    EngineNotFound,
    Forbidden,
    InvalidInput,
    Locked,
    NotFound,
    StillRunning,
)
from hafen.instances import elastic, naming, validation
from hafen.instances import policy as elastic_policy
from hafen.instances.models import (
    ControlPlane,
    Desired,
    Instance,
    InstanceSecret,
    Lock,
    Operation,
    OpState,
    SecretStatus,
    State,
)

HEARTBEAT_STALE = timedelta(seconds=15)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def heartbeat_fresh(beat: datetime | None) -> bool:
    """Whether a controller heartbeat at `beat` means that the controller runs."""
    return beat is not None and timezone.now() - beat <= HEARTBEAT_STALE


def require_control_plane() -> None:
    if not heartbeat_fresh(ControlPlane.objects.filter(pk=1).values_list("beat_at", flat=True).first()):
        raise ControlPlaneDown("the control plane is not running; start it with `hafen up --detach`")


def secret_value(name: str) -> str:
    return crypto.generate_key() if name == "secret_key" else crypto.generate_password()


def _enqueue(instance: Instance, kind: str) -> Operation:
    elastic.wake_for(instance, kind)
    operation = Operation.objects.create(instance=instance, instance_name=instance.name,
                                         organisation_id=instance.organisation_id, kind=kind)
    transaction.on_commit(lambda: wake.notify(get_settings().wake_path))
    return operation


def instances_of(actor: Actor) -> QuerySet[Instance]:
    """The instances the actor may see (never a verification's sandbox)."""
    return Instance.objects.filter(policy.instance_filter(actor), sandbox=False)


def authorized(actor: Actor, action: Action, name: str, note: audit.Note | None = None) -> Instance:
    """The named instance, if the actor may see it, may do `action` to it, and no lock refuses it."""
    instance = instances_of(actor).filter(name=name).first()
    if instance is None:
        raise NotFound(f"no instance named {name!r}")
    if note is not None:
        note.organisation_id = instance.organisation_id
    policy.check(actor, action, instance.organisation_id, f"instance {name!r}")
    if action in policy.LOCKABLE:
        refusing = [lock for lock in instance.locks.all() if action in lock.actions]
        if refusing:
            reasons = "; ".join(f"{lock.reason} ({lock.created_by})" for lock in refusing)
            raise Locked(f"{name} is locked against {action}: {reasons}")
    return instance


def organisation_for_create(actor: Actor, slug: str | None) -> Organisation | None:
    if slug:
        organisation = Organisation.objects.filter(policy.organisation_filter(actor), slug=slug).first()
        if organisation is None:
            raise NotFound(f"no organisation {slug!r}")
        policy.check(actor, Action.CREATE, organisation.id, f"organisation {slug!r}")
        return organisation
    if actor.is_operator:
        return None
    allowed = list(creatable_organisations(actor))
    if not allowed:
        raise Forbidden("your role does not allow creating instances")
    if len(allowed) > 1:
        raise InvalidInput("name the organisation the instance belongs to")
    return allowed[0]


def creatable_organisations(actor: Actor) -> QuerySet[Organisation]:
    """The organisations the actor may create instances in (operators may also create outside any)."""
    organisations = Organisation.objects.filter(policy.organisation_filter(actor))
    if actor.is_operator:
        return organisations
    memberships = actor.memberships()
    return organisations.filter(
        id__in=[org_id for org_id in memberships if Action.CREATE in policy.actions(actor, org_id, memberships)]
    )


def require_images(app: str, version: str) -> None:
    engine = get_engine()
    engine.ping()
    missing = [tag for tag in get_app(app).image_tags(version) if not engine.image_exists(tag)]
    if missing:
        raise InvalidInput(f"image {missing[0]} is not built; run `hafen images build`")


def create_instance(
    actor: Actor,
    name: str,
    app: str,
    version: str | None = None,
    domain: str | None = None,
    size: str = "small",
    organisation: str | None = None,
) -> Operation:
    with audit.audited(actor, Action.CREATE, str(name)[:32], app=app, organisation=organisation) as note:
        org = organisation_for_create(actor, organisation)
        note.organisation_id = org.id if org else None
        name = validation.name(name)
        app_def, version = validation.app_version(app, version)
        settings = get_settings()
        domain = validation.domain(domain or f"{name}.{settings.domain_suffix}", settings.prefix)
        size = validation.size(size)
        note.detail.update(version=version, domain=domain, size=size)
        if Instance.objects.filter(name=name).exists():
            raise Conflict(f"an instance named {name!r} exists already")
        if Instance.objects.filter(domain=domain).exists():
            raise Conflict(f"the domain {domain} is taken by another instance")
        require_images(app_def.name, version)
        require_control_plane()
        try:
            with transaction.atomic():
                instance = Instance.objects.create(
                    name=name,
                    app=app_def.name,
                    version=version,
                    domain=domain,
                    size=size,
                    organisation=org,
                    replicas=app_def.sizes[size].web_replicas,
                )
                InstanceSecret.objects.bulk_create(
                    InstanceSecret(instance=instance, name=s, ciphertext=crypto.encrypt(secret_value(s)))
                    for s in app_def.secrets
                )
                operation = _enqueue(instance, "create")
        except IntegrityError as exc:
            raise Conflict(f"the name {name!r} or domain {domain} was taken at the same moment") from exc
        note.operation_id = operation.id
        return operation


def get_instance(actor: Actor, name: str) -> Instance:
    return authorized(actor, Action.VIEW, name)


def list_instances(actor: Actor, *, q: str = "", state: str = "", app: str = "", organisation: str = ""
                   ) -> QuerySet[Instance]:
    """The instances the actor may see, filtered: `q` searches name and domain."""
    instances = instances_of(actor).select_related("organisation")
    if q:
        instances = instances.filter(Q(name__icontains=q) | Q(domain__icontains=q))
    if state:
        instances = instances.filter(state=state)
    if app:
        instances = instances.filter(app=app)
    if organisation:
        instances = instances.filter(organisation__slug=organisation)
    return instances


def _change(actor: Actor, action: Action, name: str, check: Callable[[Instance], None] | None = None,
            desired: Desired | None = None, validate: Callable[[], object] | None = None,
            **fields: Any) -> Operation:
    """Validate the input, authorise, check the instance's state, write the change and its operation;
    audit all of it as one entry."""
    detail = {key: value for key, value in fields.items() if isinstance(value, int | str)}
    with audit.audited(actor, action, name, **detail) as note:
        if validate is not None:
            validate()
        instance = authorized(actor, action, name, note)
        if check is not None:
            check(instance)
        require_control_plane()
        with transaction.atomic():
            # The row is locked until the operation is queued, and checked again as it is now: on
            # PostgreSQL another writer may have changed it meanwhile (SQLite's IMMEDIATE transactions
            # serialise anyway). Only the fields of this change are written, never the controller's.
            instance = Instance.objects.select_for_update().get(pk=instance.pk)
            if check is not None:
                check(instance)
            if desired is not None:
                instance.desired_state = desired
            for key, value in fields.items():
                setattr(instance, key, value)
            changed = [*fields, *(["desired_state"] if desired is not None else [])]
            instance.save(update_fields=[*changed, "updated_at"])
            operation = _enqueue(instance, action.value)
        note.operation_id = operation.id
        return operation


def _not_erased(instance: Instance) -> None:
    if instance.desired_state == Desired.ERASED:
        raise Conflict(f"{instance.name} is being erased")


def _not_deleted(doing: str) -> Callable[[Instance], None]:
    def check(instance: Instance) -> None:
        if instance.desired_state in (Desired.DELETED, Desired.ERASED):
            raise Conflict(f"{instance.name} is deleted; `hafen start {instance.name}` brings it back before {doing}")

    return check


def _running(doing: str) -> Callable[[Instance], None]:
    def check(instance: Instance) -> None:
        _not_deleted(doing)(instance)
        if instance.desired_state != Desired.RUNNING:
            raise Conflict(f"{instance.name} is stopped; start it before {doing}")

    return check


def start(actor: Actor, name: str) -> Operation:
    return _change(actor, Action.START, name, _not_erased, Desired.RUNNING)


def stop(actor: Actor, name: str) -> Operation:
    return _change(actor, Action.STOP, name, _not_deleted("stopping it"), Desired.STOPPED)


def restart(actor: Actor, name: str) -> Operation:
    return _change(actor, Action.RESTART, name, _running("restarting it"), restart_count=F("restart_count") + 1)


def scale(actor: Actor, name: str, replicas: int) -> Operation:
    return _change(actor, Action.SCALE, name, _not_deleted("scaling it"),
                   validate=lambda: validation.replicas(replicas), replicas=replicas)


def new_admin_password(actor: Actor, name: str) -> tuple[Operation, str]:
    with audit.audited(actor, Action.PASSWD, name) as note:
        instance = authorized(actor, Action.PASSWD, name, note)
        _running("setting a new admin password")(instance)
        app = get_app(instance.app)
        require_control_plane()
        password = crypto.generate_password()
        with transaction.atomic():
            # locked, so that two new passwords at once cannot both take the next version (PostgreSQL)
            Instance.objects.select_for_update().filter(pk=instance.pk).first()
            operation = _enqueue(instance, "passwd")
            # A version number is never reused: a Docker secret of a failed version may still exist.
            last = instance.secrets.filter(name=app.admin_password_secret).aggregate(Max("version"))["version__max"]
            # Pending until the app has it: only then does `credentials` show it.
            InstanceSecret.objects.create(
                instance=instance, name=app.admin_password_secret, version=(last or 0) + 1,
                ciphertext=crypto.encrypt(password), status=SecretStatus.PENDING, operation=operation,
            )
        note.operation_id = operation.id
        return operation, password


def delete(actor: Actor, name: str) -> Operation:
    return _change(actor, Action.DELETE, name, _not_erased, Desired.DELETED)


def erase(actor: Actor, name: str) -> Operation:
    return _change(actor, Action.ERASE, name, None, Desired.ERASED)


def credentials(actor: Actor, name: str) -> Credentials:
    """The admin credentials; every reveal is written to the audit log."""
    with audit.audited(actor, Action.CREDENTIALS, name) as note:
        instance = authorized(actor, Action.CREDENTIALS, name, note)
        app = get_app(instance.app)
        version = instance.secret_versions()[app.admin_password_secret]
        secret = instance.secrets.get(name=app.admin_password_secret, version=version)
        return Credentials(app.admin_username, crypto.decrypt(secret.ciphertext))


def locks(actor: Actor, name: str) -> list[Lock]:
    return list(authorized(actor, Action.VIEW, name).locks.all())


def lock(actor: Actor, name: str, actions: list[str], reason: str) -> Lock:
    with audit.audited(actor, Action.LOCK, name, actions=actions, reason=reason) as note:
        instance = authorized(actor, Action.LOCK, name, note)
        chosen = validation.lock_actions(actions)
        reason = validation.reason(reason)
        return Lock.objects.create(instance=instance, actions=chosen, reason=reason, created_by=actor.name,
                                   by_operator=actor.is_operator)


def unlock(actor: Actor, name: str, lock_id: int) -> None:
    with audit.audited(actor, "unlock", name, lock=lock_id) as note:
        instance = authorized(actor, Action.LOCK, name, note)
        found = instance.locks.filter(pk=lock_id).first()
        if found is None:
            raise NotFound(f"{name} has no lock {lock_id}")
        note.detail.update(actions=found.actions, reason=found.reason)
        if found.by_operator and not actor.is_operator:
            raise Forbidden(f"an operator set this lock ({found.reason}); only an operator can lift it")
        found.delete()


def url(instance: Instance) -> str:
    port = get_settings().http_port
    return f"http://{instance.domain}" + ("" if port == 80 else f":{port}") + "/"


def describe(instance: Instance) -> dict[str, Any]:
    services = instance.observed.get("services", {})
    app = get_app(instance.app)
    web = services.get(app.web_service, {})
    return {
        "name": instance.name,
        "app": instance.app,
        "version": instance.version,
        "domain": instance.domain,
        "url": url(instance),
        "size": instance.size,
        # the size whose limits its services have now: its own, or a larger one while an event asks for it
        "limits_size": elastic_policy.limits_size(instance),
        "organisation": instance.organisation.slug if instance.organisation else None,
        "state": instance.state,
        "desired_state": instance.desired_state,
        "replicas": {"desired": max(instance.auto_replicas or instance.replicas, instance.floor_replicas)
                     if instance.replicas else 0, "running": web.get("running", 0), "set": instance.replicas,
                     "autoscaled": instance.auto_replicas or None, "floor": instance.floor_replicas or None},
        "services": services,
        "created_at": instance.created_at.isoformat(),
        "error": instance.error,
        "node": instance.node_name or None,
    }


def describe_lock(lock: Lock) -> dict[str, Any]:
    return {"id": lock.id, "actions": lock.actions, "reason": lock.reason, "created_by": lock.created_by,
            "by_operator": lock.by_operator, "created_at": lock.created_at.isoformat()}


def detail(actor: Actor, instance: Instance) -> dict[str, Any]:
    """An instance with its recent operations, its locks, what it can be updated to, and what the actor
    may do to it."""
    from hafen.instances import backups, updates

    return {
        **describe(instance),
        "elastic": elastic.describe(instance),
        "update": updates.offers([instance])[instance.pk].describe(),
        "backups": {**backups.status([instance])[instance.pk],
                    "policy": backups.effective_policies([instance])[instance.pk].describe(instance.name),
                    "repository": get_settings().repository_display,
                    "off_host": get_settings().local_repository is None},
        "operations": [describe_operation(o) for o in _recent_operations(instance)],
        "locks": [describe_lock(lock) for lock in instance.locks.all()],
        "allowed": sorted(policy.actions(actor, instance.organisation_id)),
    }


def _recent_operations(instance: Instance, limit: int = 10) -> list[Operation]:
    return list(instance.operations.order_by("-created_at", "-id")[:limit])


def operations(actor: Actor, name: str, limit: int = 10) -> list[Operation]:
    return _recent_operations(authorized(actor, Action.VIEW, name), limit)


def get_operation(actor: Actor, operation_id: int) -> Operation:
    operation = Operation.objects.filter(policy.instance_filter(actor), pk=operation_id).first()
    if operation is None:
        raise NotFound(f"no operation {operation_id}")
    return operation


def describe_operation(operation: Operation) -> dict[str, Any]:
    return {
        "id": operation.id,
        "kind": operation.kind,
        "instance": operation.instance_name,
        "state": operation.state,
        "steps": [
            {"name": step["name"], "title": step["title"], "state": step["state"],
             "started_at": step.get("started_at"), "finished_at": step.get("finished_at"),
             "detail": step.get("detail", "")}
            for step in operation.steps
        ],
        "progress": operation.progress,
        "error": operation.error,
        "created_at": operation.created_at.isoformat(),
        "finished_at": operation.finished_at.isoformat() if operation.finished_at else None,
        "move": {"from_node": operation.params.get("from_name", ""), "to_node": operation.params.get("to_name", ""),
                 "downtime_seconds": operation.params.get("downtime_seconds")}
        if operation.kind in ("move", "evacuate") else None,
        "update": {"from_version": operation.params.get("from_version", ""),
                   "to_version": operation.params.get("to_version", ""), "plan": operation.params.get("plan", "")}
        if operation.kind == "update" else None,
    }


def wait(operation: Operation, on_update: Callable[[Operation], None] | None = None,
         timeout: float = 900, interval: float = 0.25) -> Operation:
    """Poll an operation until it has finished; report each change to on_update.

    Past the timeout the operation goes on, and StillRunning says where it is; ControlPlaneDown
    only when the controller's heartbeat is stale (checked all along while the operation waits to start).
    """
    deadline = time.monotonic() + timeout
    seen: tuple[Any, ...] = ()
    while True:
        operation.refresh_from_db()
        snapshot = (operation.state, operation.steps, operation.error)
        if snapshot != seen and on_update is not None:
            on_update(operation)
        seen = snapshot
        if operation.done:
            return operation
        late = time.monotonic() > deadline
        if late or operation.state == OpState.PENDING:
            require_control_plane()
        if late:
            step = operation.current_step()
            raise StillRunning.of(operation.kind, operation.instance_name, step["title"] if step else None,
                                  (timezone.now() - operation.created_at).total_seconds())
        time.sleep(interval)


def logs(actor: Actor, name: str, service: str | None, follow: bool = False, since: int | None = None,
         tail: int | None = None) -> Iterator[str]:
    instance = authorized(actor, Action.LOGS, name)
    app = get_app(instance.app)
    svc = service or app.web_service
    known = app.render(name=instance.name, version=instance.version, size=app.sizes[instance.size],
                       replicas=instance.replicas, app=app).services
    if svc not in known:
        raise InvalidInput(f"{instance.app} has no service {svc!r}; services: {', '.join(known)}")
    if instance.state == State.DELETED:
        raise Conflict(f"{name} is deleted: its services and their logs are gone")
    lines = get_engine().service_logs(
        naming.service(get_settings().prefix, instance.name, svc), since=since, follow=follow, tail=tail
    )

    def read() -> Iterator[str]:
        try:
            yield from lines
        except EngineNotFound as exc:  # a state of the instance (not started yet), not a fault of the engine
            raise Conflict(f"{name} has no service {svc} now (state {instance.state})") from exc

    return read()
