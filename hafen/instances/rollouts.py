"""Fleet rollouts: one app updated to one version across many instances, canaries first, then batches.

A rollout is planned when it is created: which instances, in which wave (wave 0 holds the canaries,
then batches of `batch`). The controller (controller/rollouts.py) runs it from its start time: it
starts the update of each instance of the current wave, inside that instance's organisation's update
window, and starts the next wave only when every instance of this one is updated or skipped. The first
update that fails (it rolled back by itself) ends the rollout: no further instance is touched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from hafen.access import audit, policy
from hafen.access.models import Organisation
from hafen.access.policy import Action, Actor
from hafen.backup import schedule
from hafen.catalog import get_app
from hafen.errors import Conflict, Forbidden, InvalidInput, NotFound
from hafen.instances import services
from hafen.instances.models import Desired, Instance, ItemState, Rollout, RolloutItem, RolloutState

ACTIVE = (RolloutState.SCHEDULED, RolloutState.RUNNING, RolloutState.PAUSED)
FINAL_ITEMS = (ItemState.UPDATED, ItemState.ROLLED_BACK, ItemState.FAILED, ItemState.SKIPPED, ItemState.NOT_TOUCHED)


def _rollouts_of(actor: Actor) -> QuerySet[Rollout]:
    if actor.is_operator:
        return Rollout.objects.all()
    return Rollout.objects.filter(organisation_id__in=list(actor.memberships()))


def get(actor: Actor, rollout_id: int) -> Rollout:
    rollout = _rollouts_of(actor).filter(pk=rollout_id).first()
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}")
    return rollout


def listing(actor: Actor, limit: int = 50) -> list[Rollout]:
    return list(_rollouts_of(actor)[:limit])


def _organisation(actor: Actor, slug: str | None) -> Organisation | None:
    if not slug:
        if not actor.is_operator:
            raise InvalidInput("name the organisation whose instances to update (--org)")
        if Action.UPDATE not in policy.actions(actor, None):
            raise Forbidden(f"this token has read scope; {Action.UPDATE} needs a token of write scope")
        return None
    organisation = Organisation.objects.filter(policy.organisation_filter(actor), slug=slug).first()
    if organisation is None:
        raise NotFound(f"no organisation {slug!r}")
    policy.check(actor, Action.UPDATE, organisation.id, f"organisation {slug!r}")
    return organisation


def _needs(instance: Instance, version: str) -> str:
    """Why the rollout leaves the instance as it is; "" if it updates it."""
    app = get_app(instance.app)
    if instance.version == version:
        return f"runs {version} already"
    if app.is_downgrade(instance.version, version):
        return f"runs {instance.version}, newer than {version}"
    if instance.desired_state != Desired.RUNNING:
        return f"is {instance.desired_state}"
    return ""


def create(actor: Actor, app: str, version: str, *, organisation: str | None = None, canary: int = 1,
           canaries: list[str] | None = None, batch: int = 1, start_at: datetime | None = None) -> Rollout:
    """Plan a rollout of `app` to `version` over the instances the actor may update (of `organisation`)."""
    canaries = [name.strip() for name in canaries or [] if name.strip()]
    with audit.audited(actor, "rollout", "", app=app, version=version, organisation=organisation or "",
                       canary=canary, batch=batch) as note:
        app_def = get_app(app)
        if version not in app_def.versions:
            raise InvalidInput(f"{app} has no version {version!r}; versions: {', '.join(app_def.versions)}")
        if canary < 0 or batch < 1:
            raise InvalidInput("--canary takes 0 or more instances, --batch 1 or more")
        canary = max(canary, len(canaries))  # the instances named are the canaries, at least
        if start_at is not None and timezone.is_naive(start_at):
            raise InvalidInput("give the start time with its time zone, e.g. 2026-12-01T02:00+01:00")
        org = _organisation(actor, organisation)
        note.organisation_id = org.id if org else None
        services.require_images(app_def.name, version)
        found = services.instances_of(actor).filter(app=app_def.name)
        if org is not None:
            found = found.filter(organisation=org)
        memberships = actor.memberships()
        instances = [i for i in found.order_by("name")
                     if Action.UPDATE in policy.actions(actor, i.organisation_id, memberships)]
        unknown = sorted(set(canaries) - {i.name for i in instances})
        if unknown:
            raise InvalidInput(f"no {app} instance you may update named {', '.join(unknown)}")
        todo = [i for i in instances if not _needs(i, version)]
        if not todo:
            raise Conflict(f"no {app} instance {'of ' + org.slug + ' ' if org else ''}needs {version}")
        services.require_control_plane()
        with transaction.atomic():
            busy = RolloutItem.objects.filter(rollout__state__in=ACTIVE, instance__in=todo,
                                              state__in=(ItemState.PENDING, ItemState.UPDATING))
            if busy.exists():
                names = sorted({item.instance_name for item in busy})
                raise Conflict(f"another rollout still has {', '.join(names[:5])} to update")
            rollout = Rollout.objects.create(app=app_def.name, version=version, organisation=org, canary=canary,
                                             batch=batch, start_at=start_at or timezone.now(),
                                             created_by=actor.name[:150])
            _plan_items(rollout, instances, todo, canaries)
        note.detail.update(rollout=rollout.pk, instances=len(todo))
        return rollout


def _plan_items(rollout: Rollout, instances: list[Instance], todo: list[Instance], canaries: list[str]) -> None:
    """Wave 0: the named canaries, then others up to `canary`; then batches of `batch` in name order."""
    named = [i for i in todo if i.name in canaries]
    rest = [i for i in todo if i.name not in canaries]
    chosen = (named + rest)[:rollout.canary]
    others = [i for i in todo if i not in chosen]
    waves = [chosen] if chosen else []
    waves += [others[k:k + rollout.batch] for k in range(0, len(others), rollout.batch)]
    items = [RolloutItem(rollout=rollout, instance=i, instance_name=i.name, organisation_id=i.organisation_id,
                         wave=wave, canary=bool(chosen) and wave == 0, from_version=i.version, version=i.version)
             for wave, members in enumerate(waves) for i in members]
    items += [RolloutItem(rollout=rollout, instance=i, instance_name=i.name, organisation_id=i.organisation_id,
                          wave=len(waves), state=ItemState.SKIPPED, from_version=i.version, version=i.version,
                          message=_needs(i, rollout.version)) for i in instances if i not in todo]
    RolloutItem.objects.bulk_create(items)


def _control(actor: Actor, rollout_id: int, action: str, allowed: tuple[str, ...], state: str) -> Rollout:
    with audit.audited(actor, f"rollout-{action}", "", rollout=rollout_id) as note:
        rollout = get(actor, rollout_id)
        note.organisation_id = rollout.organisation_id
        if Action.UPDATE not in policy.actions(actor, rollout.organisation_id):  # read scope, members
            raise Forbidden(f"your role does not allow {action} on rollout {rollout_id}")
        with transaction.atomic():
            rollout = Rollout.objects.select_for_update().get(pk=rollout.pk)
            if rollout.state not in allowed:
                raise Conflict(f"rollout {rollout_id} is {rollout.state}; it cannot be {action}d")
            if state == RolloutState.RUNNING and rollout.start_at > timezone.now():
                state = RolloutState.SCHEDULED  # resumed before its time: it waits for it again
            rollout.state = state
            if state == RolloutState.CANCELLED:
                rollout.finished_at = timezone.now()
                rollout.error = f"cancelled by {actor.name}"
                rollout.items.filter(state=ItemState.PENDING).update(state=ItemState.NOT_TOUCHED,
                                                                     message="the rollout was cancelled")
            rollout.save()
        return rollout


def pause(actor: Actor, rollout_id: int) -> Rollout:
    """No further instance is started; the updates under way finish."""
    return _control(actor, rollout_id, "pause", (RolloutState.SCHEDULED, RolloutState.RUNNING), RolloutState.PAUSED)


def resume(actor: Actor, rollout_id: int) -> Rollout:
    return _control(actor, rollout_id, "resume", (RolloutState.PAUSED,), RolloutState.RUNNING)


def cancel(actor: Actor, rollout_id: int) -> Rollout:
    """No further instance is started; the updates under way finish (or roll back) on their own."""
    return _control(actor, rollout_id, "cancel", ACTIVE, RolloutState.CANCELLED)


def window_of(organisation: Organisation | None) -> tuple[str, int]:
    if organisation is None or not organisation.update_window:
        return "", 0
    return organisation.update_window, organisation.update_window_minutes


def set_window(actor: Actor, slug: str, cron: str, minutes: int) -> Organisation:
    """The organisation's update window: opens at each fire of `cron` (UTC), `minutes` long; "" = any time."""
    with audit.audited(actor, "update-window", "", organisation=slug, window=cron, minutes=minutes) as note:
        organisation = Organisation.objects.filter(policy.organisation_filter(actor), slug=slug).first()
        if organisation is None:
            raise NotFound(f"no organisation {slug!r}")
        note.organisation_id = organisation.id
        policy.check(actor, Action.UPDATE, organisation.id, f"organisation {slug!r}")
        cron = schedule.validate_cron(cron) if cron.strip() else ""
        if cron and not 1 <= minutes <= 7 * 24 * 60:
            raise InvalidInput("a window lasts 1 minute to 7 days (--minutes)")
        organisation.update_window, organisation.update_window_minutes = cron, minutes if cron else 0
        organisation.save(update_fields=["update_window", "update_window_minutes"])
        return organisation


def describe_window(organisation: Organisation | None, now: datetime | None = None) -> dict[str, Any] | None:
    cron, minutes = window_of(organisation)
    if not cron:
        return None
    now = now or timezone.now()
    return {"cron": cron, "minutes": minutes, "open": schedule.window_open(cron, minutes, now),
            "next": schedule.next_window(cron, now).isoformat()}


def describe(rollout: Rollout) -> dict[str, Any]:
    items = list(rollout.items.all())
    counts: dict[str, int] = {}
    for item in items:
        counts[item.state] = counts.get(item.state, 0) + 1
    return {
        "id": rollout.pk, "app": rollout.app, "version": rollout.version,
        "organisation": rollout.organisation.slug if rollout.organisation else None,
        "canary": rollout.canary, "batch": rollout.batch, "state": rollout.state, "error": rollout.error,
        "start_at": rollout.start_at.isoformat(), "created_by": rollout.created_by,
        "created_at": rollout.created_at.isoformat(),
        "started_at": rollout.started_at.isoformat() if rollout.started_at else None,
        "finished_at": rollout.finished_at.isoformat() if rollout.finished_at else None,
        "counts": counts,
        "items": [{"instance": i.instance_name, "wave": i.wave, "canary": i.canary, "state": i.state,
                   "from_version": i.from_version, "version": i.version, "message": i.message,
                   "operation": i.operation_id} for i in items],
    }
