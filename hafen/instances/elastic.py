"""Elastic capacity in the service layer: an instance's policy, its decisions, and waking it for work.

The controller takes the decisions (controller/elastic.py); what users change and read is here.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from hafen import wake
from hafen.access import audit
from hafen.access import policy as access_policy
from hafen.access.models import Organisation
from hafen.access.policy import Action, Actor
from hafen.config import get_settings
from hafen.errors import InvalidInput, NotFound
from hafen.instances import policy as elastic_policy
from hafen.instances.models import Decision, Instance, Operation, Sleep

# Operations that bring every service up (or down) by themselves: they only take the sleep away.
BRINGS_UP = frozenset({"create", "start", "restart", "scale", "repair", "stop", "delete", "erase", "sleep", "wake"})
DECISIONS_SHOWN = 10
DECISIONS_KEPT = 50


def record(instance: Instance, decision: elastic_policy.Decision) -> Decision:
    row = Decision.objects.create(instance=instance, action=decision.action, reason=decision.reason,
                                  numbers=decision.numbers)
    old = Decision.objects.filter(instance=instance).values_list("pk", flat=True)[DECISIONS_KEPT:]
    Decision.objects.filter(pk__in=list(old)).delete()
    return row


def queue(instance: Instance, kind: str) -> Operation:
    operation = Operation.objects.create(instance=instance, instance_name=instance.name,
                                         organisation_id=instance.organisation_id, kind=kind)
    transaction.on_commit(lambda: wake.notify(get_settings().wake_path))
    return operation


def wake_for(instance: Instance, kind: str) -> None:
    """Before an operation of `kind` is queued for a sleeping instance (in the same transaction): a
    backup of a light sleeper needs only its database, which runs; an operation that starts the services
    itself only clears the sleep; any other (an update, a restore, a new password, a move of a deep
    sleeper) first wakes it."""
    if instance.sleep == Sleep.AWAKE or (kind == "backup" and instance.sleep == Sleep.LIGHT):
        return
    was = instance.sleep
    Instance.objects.filter(pk=instance.pk).update(sleep=Sleep.AWAKE, last_active_at=timezone.now())
    instance.sleep = Sleep.AWAKE
    # a move backs up a light sleeper's running database and starts it awake elsewhere; an evacuation
    # restores it elsewhere (its node does not answer: nothing can be started there)
    if kind in BRINGS_UP or kind == "evacuate" or (kind == "move" and was == Sleep.LIGHT):
        return
    queue(instance, "wake")
    record(instance, elastic_policy.Decision("wake", f"{kind} needs it awake", {"was": was}))


def describe_decision(decision: Decision) -> dict[str, Any]:
    return {"at": decision.at.isoformat(), "action": decision.action, "reason": decision.reason,
            "numbers": decision.numbers}


def describe(instance: Instance) -> dict[str, Any]:
    """Its policy as it applies, how asleep it is, and the controller's latest decisions."""
    policy = elastic_policy.effective(instance, get_settings())
    return {
        "policy": policy.describe(),
        "sleep": instance.sleep or None,
        "slept_at": instance.slept_at.isoformat() if instance.slept_at else None,
        "last_request_at": instance.last_active_at.isoformat() if instance.last_active_at else None,
        "decisions": [describe_decision(d) for d in instance.decisions.all()[:DECISIONS_SHOWN]],
    }


def show_policy(actor: Actor, name: str) -> dict[str, Any]:
    from hafen.instances.services import authorized

    return {"instance": name, **describe(authorized(actor, Action.VIEW, name))}


def set_policy(actor: Actor, name: str, **values: str | None) -> dict[str, Any]:
    """Set (a duration or never; a number, max also off) or take away ('default') the instance's own values
    of the policy's keys (idle, deep_sleep, hold, min, max, target_inflight, target_cpu); audited."""
    from hafen.instances.services import authorized

    given = {key: value for key, value in values.items() if value is not None}
    with audit.audited(actor, Action.POLICY, name, **given) as note:
        if not given:
            raise InvalidInput("nothing to change: give --idle, --deep-sleep, --hold, --min, --max, "
                               "--target-inflight or --target-cpu (a value, or default)")
        changes = elastic_policy.changes(given)
        removed = elastic_policy.removed(given)
        instance = authorized(actor, Action.POLICY, name, note)
        with transaction.atomic():
            instance = Instance.objects.select_for_update().get(pk=instance.pk)
            values_now = {k: v for k, v in instance.policy.items() if k not in removed}
            instance.policy = {**values_now, **changes}
            elastic_policy.check(elastic_policy.effective(instance, get_settings()))
            instance.save(update_fields=["policy", "updated_at"])
        transaction.on_commit(lambda: wake.notify(get_settings().wake_path))
        return {"instance": name, **describe(instance)}


def _organisation(actor: Actor, slug: str, action: Action) -> Organisation:
    organisation = Organisation.objects.filter(access_policy.organisation_filter(actor), slug=slug).first()
    if organisation is None:
        raise NotFound(f"no organisation {slug!r}")
    access_policy.check(actor, action, organisation.id, f"organisation {slug!r}")
    return organisation


def describe_organisation(organisation: Organisation) -> dict[str, Any]:
    """The organisation's own defaults, as shown (only the keys it sets)."""
    values = organisation.policy or {}
    return {"organisation": organisation.slug,
            "policy": {key: elastic_policy.shown(key, values[key]) for key in elastic_policy.KEYS if key in values}}


def show_organisation_policy(actor: Actor, slug: str) -> dict[str, Any]:
    return describe_organisation(_organisation(actor, slug, Action.VIEW))


def set_organisation_policy(actor: Actor, slug: str, **values: str | None) -> dict[str, Any]:
    """The defaults of the organisation's instances (a key an instance does not set itself); 'default' takes
    the organisation's value away. Operators and the organisation's admins; audited."""
    given = {key: value for key, value in values.items() if value is not None}
    with audit.audited(actor, Action.POLICY, "", organisation=slug, **given) as note:
        if not given:
            raise InvalidInput("nothing to change: give --idle, --deep-sleep, --hold, --min, --max, "
                               "--target-inflight or --target-cpu (a value, or default)")
        changes = elastic_policy.changes(given)
        removed = elastic_policy.removed(given)
        organisation = _organisation(actor, slug, Action.POLICY)
        note.organisation_id = organisation.id
        with transaction.atomic():
            organisation = Organisation.objects.select_for_update().get(pk=organisation.pk)
            kept = {k: v for k, v in (organisation.policy or {}).items() if k not in removed}
            organisation.policy = {**kept, **changes}
            low, high = organisation.policy.get("min", 1), organisation.policy.get("max")
            if high is not None and "max" in organisation.policy and high < low:
                raise InvalidInput(f"max ({high}) is below min ({low})")
            organisation.save(update_fields=["policy"])
        transaction.on_commit(lambda: wake.notify(get_settings().wake_path))
        return describe_organisation(organisation)
