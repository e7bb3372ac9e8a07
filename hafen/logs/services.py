"""Searching the logs and listing the grouped errors, as the CLI, the API and the UI ask.

Operators see every line and group; a customer only those of its organisations' instances, never
hafen's own (whose lines carry no organisation).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from hafen.access.models import Organisation
from hafen.access.policy import Actor
from hafen.errors import InvalidInput
from hafen.logs.models import ErrorGroup
from hafen.logs.parse import LEVELS
from hafen.logs.store import MAX_LIMIT, Query, get_store


def visible_orgs(actor: Actor) -> frozenset[str] | None:
    """None for an operator (everything), else the slugs of the actor's organisations."""
    if actor.is_operator:
        return None
    ids = list(actor.memberships())
    return frozenset(Organisation.objects.filter(id__in=ids).values_list("slug", flat=True))


def make_query(actor: Actor, *, text: str = "", instance: str = "", service: str = "", org: str = "",
               level: str = "", since: float | None = None, until: float | None = None, limit: int = 100,
               after_id: int = 0, before_id: int = 0) -> Query:
    if level and level not in LEVELS:
        raise InvalidInput(f"level is one of {', '.join(LEVELS)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit is between 1 and {MAX_LIMIT}")
    if since is not None and until is not None and until <= since:
        raise InvalidInput("until must be later than since")
    if len(text) > 500:
        raise InvalidInput("the text to search for is at most 500 characters")
    return Query(text=text.strip(), instance=instance, service=service, org=org, level=level, since=since,
                 until=until, limit=limit, after_id=max(0, after_id), before_id=max(0, before_id),
                 orgs=visible_orgs(actor))


def search(actor: Actor, **filters: Any) -> list[dict[str, Any]]:
    """The matching lines the actor may see, newest first."""
    query = make_query(actor, **filters)
    return [_line(row.as_dict()) for row in get_store().search(query)]


def _line(row: dict[str, Any]) -> dict[str, Any]:
    row["time"] = datetime.fromtimestamp(row["ts"]).astimezone().isoformat(timespec="milliseconds")
    return row


def error_groups(actor: Actor, instance: str = "", limit: int = 200) -> QuerySet[ErrorGroup]:
    """The kinds of error the actor may see, the latest seen first."""
    groups = ErrorGroup.objects.all()
    orgs = visible_orgs(actor)
    if orgs is not None:
        groups = groups.filter(org__in=orgs).exclude(instance="")
    if instance:
        groups = groups.filter(instance=instance)
    return groups.order_by("-last_seen", "-id")[:limit]


def error_group(actor: Actor, group_id: int) -> ErrorGroup | None:
    groups = ErrorGroup.objects.filter(id=group_id)
    orgs = visible_orgs(actor)
    if orgs is not None:
        groups = groups.filter(org__in=orgs).exclude(instance="")
    return groups.first()


def describe_group(group: ErrorGroup) -> dict[str, Any]:
    first = group.first_seen.timestamp()
    return {
        "id": group.id, "instance": group.instance, "organisation": group.org, "service": group.service,
        "kind": group.kind, "message": group.message, "count": group.count,
        "first_seen": group.first_seen.isoformat(), "last_seen": group.last_seen.isoformat(),
        "sample": group.sample,
        # the logs around its first occurrence: a minute before to a minute after
        "logs": {"instance": group.instance, "service": group.service, "since": int(first) - 60,
                 "until": int(first) + 60},
        "new": time.time() - first < 86400,
    }
