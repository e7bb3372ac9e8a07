"""Writing and reading the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet

from hafen.access.models import AuditEntry, Result
from hafen.access.policy import Actor
from hafen.errors import HafenError, OperationFailed


@dataclass
class Note:
    """What an audited call learns while it runs, written with its result."""

    organisation_id: int | None = None
    operation_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def record(actor: Actor, action: str, result: Result, *, instance_name: str = "", organisation_id: int | None = None,
           message: str = "", detail: dict[str, Any] | None = None, operation_id: int | None = None) -> AuditEntry:
    # what a caller sent is kept as far as the columns hold it (PostgreSQL refuses longer values)
    return AuditEntry.objects.create(
        user=actor.user, actor=actor.name[:150], via=actor.via, source=actor.source[:64], action=action[:32],
        organisation_id=organisation_id, instance_name=instance_name[:32], detail=detail or {}, result=result,
        message=message, operation_id=operation_id,
    )


@contextmanager
def audited(actor: Actor, action: str, instance_name: str = "", **detail: Any) -> Iterator[Note]:
    """Record the call's outcome: ok, refused (a HafenError the user caused) or failed."""
    note = Note(detail=dict(detail))
    try:
        yield note
    except HafenError as exc:
        result = Result.FAILED if isinstance(exc, OperationFailed) else Result.REFUSED
        record(actor, action, result, instance_name=instance_name, organisation_id=note.organisation_id,
               message=str(exc), detail=note.detail, operation_id=note.operation_id)
        raise
    except Exception as exc:
        record(actor, action, Result.FAILED, instance_name=instance_name, organisation_id=note.organisation_id,
               message=type(exc).__name__, detail=note.detail, operation_id=note.operation_id)
        raise
    record(actor, action, Result.OK, instance_name=instance_name, organisation_id=note.organisation_id,
           detail=note.detail, operation_id=note.operation_id)


def visible(actor: Actor) -> QuerySet[AuditEntry]:
    """Operators see everything; others their organisations' entries and their own."""
    entries = AuditEntry.objects.select_related("organisation")
    if actor.is_operator:
        return entries
    return entries.filter(Q(organisation_id__in=list(actor.memberships())) | Q(user=actor.user))


def search(actor: Actor, *, instance: str = "", action: str = "", actor_name: str = "", result: str = "",
           organisation: str = "") -> QuerySet[AuditEntry]:
    entries = visible(actor)
    if instance:
        entries = entries.filter(instance_name=instance)
    if action:
        entries = entries.filter(action=action)
    if actor_name:
        entries = entries.filter(actor__icontains=actor_name)
    if result:
        entries = entries.filter(result=result)
    if organisation:
        entries = entries.filter(organisation__slug=organisation)
    return entries


def describe(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id, "at": entry.at.isoformat(), "actor": entry.actor, "via": entry.via, "source": entry.source,
        "action": entry.action, "organisation": entry.organisation.slug if entry.organisation else None,
        "instance": entry.instance_name, "detail": entry.detail, "result": entry.result, "message": entry.message,
        "operation_id": entry.operation_id,
    }
