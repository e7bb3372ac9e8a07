"""Updates of an instance to another version or build of its app: what is on offer, and queuing one.

An instance runs the images it was pinned to (`Instance.images`, image ids). An update is available
when its app has a newer version, or when an image of its version was rebuilt since (a new base, a
security fix): the tag names another image id than the instance runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from hafen.access import audit
from hafen.access.policy import Action, Actor
from hafen.catalog import App, apps, get_app
from hafen.engine import get_engine
from hafen.errors import Conflict, InvalidInput
from hafen.instances import services
from hafen.instances.backups import enqueue, new_snapshot, require_running, resolve
from hafen.instances.models import ACTIVE_STATES, ControlPlane, Instance, Operation
from hafen.instances.stack import image_tags_of

ROLLING, MIGRATING = "rolling", "migrating"


@dataclass
class Offer:
    """What an instance can be updated to."""

    versions: list[str] = field(default_factory=list)  # newer app versions, oldest first
    rebuilt: bool = False  # a newer build of the version it runs

    @property
    def available(self) -> bool:
        return bool(self.versions) or self.rebuilt

    def describe(self) -> dict[str, Any]:
        return {"available": self.available, "versions": self.versions, "rebuilt": self.rebuilt}


class Images:
    """The current image id of each tag, looked up once per tag (a list shows many instances)."""

    def __init__(self, lookup: Callable[[str], str]) -> None:
        self.lookup = lookup
        self._ids: dict[str, str] = {}
        self._tags: dict[tuple[str, str, str], set[str]] = {}  # rendering a stack is not free

    def id(self, tag: str) -> str:
        if tag not in self._ids:
            self._ids[tag] = self.lookup(tag)
        return self._ids[tag]

    def pins(self, app: App, version: str, size: str) -> dict[str, str]:
        """The image ids an instance of `version` would be pinned to now."""
        key = (app.name, version, size)
        if key not in self._tags:
            self._tags[key] = image_tags_of(app, version, size)
        return {tag: self.id(tag) for tag in sorted(self._tags[key])}


def catalogue_tags() -> set[str]:
    """Every image tag a stack of the catalogue names."""
    return {tag for app in apps().values() for version in app.versions
            for tag in image_tags_of(app, version, next(iter(app.sizes)))}


def offer(instance: Instance, images: Images) -> Offer:
    app = get_app(instance.app)
    current = images.pins(app, instance.version, instance.size)
    rebuilt = any(instance.images.get(tag) not in (None, image) for tag, image in current.items() if image)
    return Offer(app.newer_versions(instance.version), rebuilt)


def offers(instances: Iterable[Instance]) -> dict[int, Offer]:
    """The offer of each instance, by primary key, from the image ids the controller last saw (a page
    never waits on the engine); no newer build is known while the controller has seen none."""
    seen = ControlPlane.objects.filter(pk=1).values_list("images", flat=True).first() or {}
    images = Images(lambda tag: str(seen.get(tag, "")))
    return {instance.pk: offer(instance, images) for instance in instances}


def _plan(app: App, instance: Instance, version: str, pins: dict[str, str]) -> str:
    """Rolling when only the app's own images of the same version changed, else migrating."""
    if version != instance.version:
        return MIGRATING
    changed = {tag for tag, image in pins.items() if instance.images.get(tag) != image}
    return ROLLING if changed <= set(app.image_tags(version)) else MIGRATING


def update(actor: Actor, name: str, version: str | None = None, restore: str | None = None) -> Operation:
    """Queue an update of `name` to `version` (default: its app's newest), or to a newer build of the
    version it runs. A downgrade needs `restore`: a backup taken on the older version, whose data it
    brings back (an older version cannot read what a newer one migrated)."""
    with audit.audited(actor, Action.UPDATE, name, version=version or "", restore=restore or "") as note:
        instance = services.authorized(actor, Action.UPDATE, name, note)
        app = get_app(instance.app)
        target = (version or app.newest_version).strip()
        if target not in app.versions:
            raise InvalidInput(f"{app.name} has no version {target!r}; versions: {', '.join(app.versions)}")
        under_way = instance.operations.filter(kind="update", state__in=ACTIVE_STATES).first()
        if under_way is not None:
            raise Conflict(f"an update of {name} is under way (operation {under_way.pk}); wait for it to end")
        require_running(instance, "an update")
        older = None
        if app.is_downgrade(instance.version, target):
            if not restore:
                raise Conflict(f"{name} runs {instance.version}; going back to {target} needs --restore SNAPSHOT, "
                               f"a backup taken on {target} (its data replaces the current data)")
            older = resolve(actor, name, restore, Action.RESTORE)
            if older.version != target:
                raise Conflict(f"the backup {older.short_id} was taken on {older.version}, not {target}")
        elif restore:
            raise InvalidInput("--restore is only for going back to an older version")
        services.require_images(app.name, target)
        pins = Images(get_engine().image_id).pins(app, target, instance.size)
        if target == instance.version and all(instance.images.get(tag) == image for tag, image in pins.items()):
            raise Conflict(f"{name} runs the newest build of {app.title} {target} already")
        plan = _plan(app, instance, target, pins)
        note.detail.update(version=target, plan=plan, from_version=instance.version)
        services.require_control_plane()
        with transaction.atomic():
            params: dict[str, Any] = {"plan": plan, "from_version": instance.version, "to_version": target,
                                      "from_images": dict(instance.images), "to_images": pins}
            if plan == MIGRATING:
                backup = new_snapshot(instance, "update")
                params.update(backup=backup.pk, restore=backup.pk)
            if older is not None:
                params["older"] = older.pk
            operation = enqueue(instance, "update", params)
        note.operation_id = operation.id
        return operation
