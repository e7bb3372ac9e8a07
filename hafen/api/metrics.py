"""REST API of the metrics and alerts: chart data, the fleet view, alerts and silences (see README)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from hafen.access.policy import Actor
from hafen.api import schemas as s
from hafen.instances import monitoring

router = Router(tags=["metrics"])
ERRORS: dict[int, type[Schema]] = {code: s.ErrorOut for code in (400, 401, 403, 404, 409, 503)}


class SilenceIn(Schema):
    instance: str
    duration: str = "2h"  # 30m, 2h, 1d ...
    comment: str = ""


def _actor(request: HttpRequest) -> Actor:
    actor: Actor = request.auth  # type: ignore[attr-defined]
    return actor


@router.get("/instances/{name}/metrics", response={200: dict[str, Any], **ERRORS})
def instance_metrics(request: HttpRequest, name: str, range: str = "1h") -> dict[str, Any]:
    """The instance's chart data over the last hour, day or week (`range` 1h, 1d, 1w): CPU, memory and its
    limit, requests and errors, open requests and websockets, replicas; each series a list of [time, value]."""
    return monitoring.chart_data(_actor(request), name, range)


@router.get("/fleet", response={200: dict[str, list[tuple[str, float]]], **ERRORS})
def fleet(request: HttpRequest) -> dict[str, list[tuple[str, float]]]:
    """The busiest instances, those nearest their memory limit, those with errors (the caller's only)."""
    return monitoring.fleet(_actor(request))


@router.get("/alerts", response={200: list[dict[str, Any]], **ERRORS})
def alerts(request: HttpRequest) -> list[dict[str, Any]]:
    """The alerts firing now (a customer's: those of its instances)."""
    return monitoring.alerts(_actor(request))


@router.get("/silences", response={200: list[dict[str, Any]], **ERRORS})
def silences(request: HttpRequest) -> list[dict[str, Any]]:
    return monitoring.silences(_actor(request))


@router.post("/silences", response={201: dict[str, Any], **ERRORS})
def silence(request: HttpRequest, body: SilenceIn) -> Status[dict[str, Any]]:
    """Silence an instance's alerts for a maintenance window (its organisation's admins and operators)."""
    return Status(201, monitoring.silence(_actor(request), body.instance, body.duration, body.comment))


@router.delete("/silences/{silence_id}", response={204: None, **ERRORS})
def unsilence(request: HttpRequest, silence_id: str) -> Status[None]:
    monitoring.unsilence(_actor(request), silence_id)
    return Status(204, None)
