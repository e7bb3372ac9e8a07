"""The service layer: what the CLI, the API and the UI may do to instances.

Each call validates, writes desired state and an operation in one
transaction, and returns; the controller does the work. Nothing here talks to
the engine except read-only checks (is it up, is an image there) and logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from hafen import crypto, wake
from hafen.catalog import get_app
from hafen.config import get_settings
from hafen.engine import get_engine
from hafen.errors import Conflict, ControlPlaneDown, InvalidInput, NotFound
from hafen.instances import naming, validation
from hafen.instances.models import ControlPlane, Desired, Instance, InstanceSecret, Operation, OpState, State

HEARTBEAT_STALE = timedelta(seconds=15)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def require_control_plane() -> None:
    beat = ControlPlane.objects.filter(pk=1).values_list("beat_at", flat=True).first()
    if beat is None or timezone.now() - beat > HEARTBEAT_STALE:
        raise ControlPlaneDown("the control plane is not running; start it with `hafen up --detach`")


def _secret_value(name: str) -> str:
    return crypto.generate_key() if name == "secret_key" else crypto.generate_password()


def _enqueue(instance: Instance, kind: str, **params: Any) -> Operation:
    operation = Operation.objects.create(instance=instance, instance_name=instance.name, kind=kind, params=params)
    transaction.on_commit(lambda: wake.notify(get_settings().wake_path))
    return operation


def _active_op(instance: Instance, kinds: tuple[str, ...]) -> Operation | None:
    return instance.operations.filter(kind__in=kinds, state__in=[OpState.PENDING, OpState.RUNNING]).first()


def create_instance(
    name: str,
    app: str,
    version: str | None = None,
    domain: str | None = None,
    size: str = "small",
    owner: str = "",
) -> Operation:
    name = validation.name(name)
    app_def, version = validation.app_version(app, version)
    domain = validation.domain(domain or f"{name}.{get_settings().domain_suffix}")
    size = validation.size(size)
    if Instance.objects.filter(name=name).exists():
        raise Conflict(f"an instance named {name!r} exists already")
    if Instance.objects.filter(domain=domain).exists():
        raise Conflict(f"the domain {domain} is taken by another instance")
    engine = get_engine()
    engine.ping()
    missing = [tag for tag in app_def.image_tags(version) if not engine.image_exists(tag)]
    if missing:
        raise InvalidInput(f"image {missing[0]} is not built; run `hafen images build`")
    require_control_plane()
    try:
        with transaction.atomic():
            instance = Instance.objects.create(
                name=name,
                app=app_def.name,
                version=version,
                domain=domain,
                size=size,
                owner=owner,
                replicas=app_def.sizes[size].web_replicas,
            )
            InstanceSecret.objects.bulk_create(
                InstanceSecret(instance=instance, name=s, ciphertext=crypto.encrypt(_secret_value(s)))
                for s in app_def.secrets
            )
            return _enqueue(instance, "create")
    except IntegrityError as exc:
        raise Conflict(f"the name {name!r} or domain {domain} was taken at the same moment") from exc


def get_instance(name: str) -> Instance:
    try:
        return Instance.objects.get(name=name)
    except Instance.DoesNotExist:
        raise NotFound(f"no instance named {name!r}") from None


def list_instances() -> list[Instance]:
    return list(Instance.objects.all())


def _change(name: str, kind: str, desired: Desired | None = None, **fields: Any) -> Operation:
    require_control_plane()
    with transaction.atomic():
        instance = get_instance(name)
        if desired is not None:
            instance.desired_state = desired
        for key, value in fields.items():
            setattr(instance, key, value)
        instance.save()
        return _enqueue(instance, kind)


def _require_not_deleted(instance: Instance, action: str) -> None:
    if instance.desired_state in (Desired.DELETED, Desired.ERASED):
        raise Conflict(f"{instance.name} is deleted; `hafen start {instance.name}` brings it back before {action}")


def start(name: str) -> Operation:
    instance = get_instance(name)
    if instance.desired_state == Desired.ERASED:
        raise Conflict(f"{name} is being erased")
    return _change(name, "start", Desired.RUNNING)


def stop(name: str) -> Operation:
    _require_not_deleted(get_instance(name), "stopping it")
    return _change(name, "stop", Desired.STOPPED)


def restart(name: str) -> Operation:
    instance = get_instance(name)
    _require_not_deleted(instance, "restarting it")
    if instance.desired_state != Desired.RUNNING:
        raise Conflict(f"{name} is stopped; use `hafen start {name}`")
    return _change(name, "restart", restart_count=instance.restart_count + 1)


def scale(name: str, replicas: int) -> Operation:
    replicas = validation.replicas(replicas)
    instance = get_instance(name)
    _require_not_deleted(instance, "scaling it")
    return _change(name, "scale", replicas=replicas)


def new_admin_password(name: str) -> tuple[Operation, str]:
    instance = get_instance(name)
    _require_not_deleted(instance, "setting a password")
    if instance.desired_state != Desired.RUNNING:
        raise Conflict(f"{name} is stopped; start it before setting a new admin password")
    app = get_app(instance.app)
    require_control_plane()
    password = crypto.generate_password()
    with transaction.atomic():
        version = instance.secret_versions()[app.admin_password_secret] + 1
        InstanceSecret.objects.create(
            instance=instance, name=app.admin_password_secret, version=version, ciphertext=crypto.encrypt(password)
        )
        return _enqueue(instance, "passwd"), password


def delete(name: str) -> Operation:
    instance = get_instance(name)
    if instance.desired_state == Desired.ERASED:
        raise Conflict(f"{name} is being erased")
    return _change(name, "delete", Desired.DELETED)


def erase(name: str) -> Operation:
    get_instance(name)
    return _change(name, "erase", Desired.ERASED)


def credentials(name: str) -> Credentials:
    instance = get_instance(name)
    app = get_app(instance.app)
    version = instance.secret_versions()[app.admin_password_secret]
    secret = instance.secrets.get(name=app.admin_password_secret, version=version)
    return Credentials(app.admin_username, crypto.decrypt(secret.ciphertext))


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
        "owner": instance.owner,
        "state": instance.state,
        "desired_state": instance.desired_state,
        "replicas": {"desired": instance.replicas, "running": web.get("running", 0)},
        "services": services,
        "created_at": instance.created_at.isoformat(),
        "error": instance.error,
    }


def operations(name: str, limit: int = 10) -> list[Operation]:
    return list(Operation.objects.filter(instance_name=name).order_by("-created_at", "-id")[:limit])


def wait(operation: Operation, on_update: Callable[[Operation], None] | None = None,
         timeout: float = 900, interval: float = 0.25) -> Operation:
    """Poll an operation until it has finished; report each change to on_update."""
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
        if time.monotonic() > deadline:
            raise ControlPlaneDown(f"operation {operation.kind} of {operation.instance_name} did not finish in time")
        if operation.state == OpState.PENDING:
            require_control_plane()
        time.sleep(interval)


def logs(name: str, service: str | None, follow: bool = False, since: int | None = None,
         tail: int | None = None) -> Iterator[str]:
    instance = get_instance(name)
    app = get_app(instance.app)
    svc = service or app.web_service
    known = app.render(name=instance.name, version=instance.version, size=app.sizes[instance.size],
                       replicas=instance.replicas, app=app).services
    if svc not in known:
        raise InvalidInput(f"{instance.app} has no service {svc!r}; services: {', '.join(known)}")
    if instance.state == State.DELETED:
        raise Conflict(f"{name} is deleted: its services and their logs are gone")
    return get_engine().service_logs(
        naming.service(get_settings().prefix, instance.name, svc), since=since, follow=follow, tail=tail
    )
