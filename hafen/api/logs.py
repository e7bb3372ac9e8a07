"""The REST API of the central logs and the grouped errors (mounted on /api/v1 by v1.py)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema

from hafen.access.policy import Actor
from hafen.api.schemas import ErrorOut
from hafen.errors import NotFound
from hafen.logs import services as logs

router = Router(tags=["logs"])
ERRORS: dict[int, type[Schema]] = {code: ErrorOut for code in (400, 401, 403, 404)}


class LogLineOut(Schema):
    id: int
    ts: float
    time: str
    instance: str
    service: str
    org: str
    level: str
    container: str
    message: str


class LogSearchOut(Schema):
    lines: list[LogLineOut]


class LogSearch(Schema):
    q: str = ""
    instance: str = ""
    service: str = ""
    org: str = ""
    level: str = ""
    since: float | None = None
    until: float | None = None
    after_id: int = 0
    before_id: int = 0
    limit: int = 100


class ErrorGroupOut(Schema):
    id: int
    instance: str
    organisation: str
    service: str
    kind: str
    message: str
    count: int
    first_seen: str
    last_seen: str
    sample: str
    logs: dict[str, Any]
    new: bool


def _actor(request: HttpRequest) -> Actor:
    actor: Actor = request.auth  # type: ignore[attr-defined]
    return actor


@router.get("/logs", response={200: LogSearchOut, **ERRORS})
def search_logs(request: HttpRequest, query: Query[LogSearch]) -> dict[str, Any]:
    """Search every log you may see (newest first): words (`q`), instance, service, organisation, level
    and above, time range (Unix times); `after_id` for a live tail, `before_id` for the page before."""
    filters = query.dict()
    filters["text"] = filters.pop("q")
    return {"lines": logs.search(_actor(request), **filters)}


@router.get("/errors", response={200: list[ErrorGroupOut], **ERRORS})
def list_errors(request: HttpRequest, instance: str = "") -> list[dict[str, Any]]:
    """The kinds of error (tracebacks and error lines grouped by signature), the latest seen first."""
    return [logs.describe_group(g) for g in logs.error_groups(_actor(request), instance)]


@router.get("/errors/{group_id}", response={200: ErrorGroupOut, **ERRORS})
def show_error(request: HttpRequest, group_id: int) -> dict[str, Any]:
    group = logs.error_group(_actor(request), group_id)
    if group is None:
        raise NotFound(f"no error group {group_id}")
    return logs.describe_group(group)
