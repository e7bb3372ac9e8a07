"""An operation's steps and progress, polled by htmx until it has finished."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hafen.access.policy import Actor
from hafen.instances import services
from hafen.instances.models import Operation, Snapshot
from hafen.web.views.common import actor, ui_view


def _context(request: HttpRequest, operation_id: int) -> dict[str, Any]:
    who = actor(request)
    operation = services.get_operation(who, operation_id)
    steps = operation.steps or []
    return {
        "op": services.describe_operation(operation),
        "done": operation.done,
        "steps_done": sum(1 for step in steps if step["state"] == "done"),
        "steps_total": len(steps),
        "percent": round(operation.progress * 100),
        # a verification's sandbox is nobody's to look at: its page leads back to the backed-up instance
        "instance_exists": operation.instance is not None and not operation.instance.sandbox,
        "backups_of": _verified_instance(who, operation),
    }


def _verified_instance(who: Actor, operation: Operation) -> str | None:
    """The instance whose backup a verification checks, if the actor may see it."""
    if operation.kind != "verify":
        return None
    name = Snapshot.objects.filter(pk=operation.params.get("restore")).values_list("instance_name", flat=True).first()
    return name if name and services.instances_of(who).filter(name=name).exists() else None


@ui_view
def detail(request: HttpRequest, operation_id: int) -> HttpResponse:
    return render(request, "web/operation.html", _context(request, operation_id))


@ui_view
def progress(request: HttpRequest, operation_id: int) -> HttpResponse:
    return render(request, "web/_operation.html", _context(request, operation_id))
