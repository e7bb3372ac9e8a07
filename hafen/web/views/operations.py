"""An operation's steps and progress, polled by htmx until it has finished."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hafen.instances import services
from hafen.web.views.common import actor, ui_view


def _context(request: HttpRequest, operation_id: int) -> dict[str, Any]:
    operation = services.get_operation(actor(request), operation_id)
    steps = operation.steps or []
    return {
        "op": services.describe_operation(operation),
        "done": operation.done,
        "steps_done": sum(1 for step in steps if step["state"] == "done"),
        "steps_total": len(steps),
        "percent": round(operation.progress * 100),
        "instance_exists": operation.instance_id is not None,
    }


@ui_view
def detail(request: HttpRequest, operation_id: int) -> HttpResponse:
    return render(request, "web/operation.html", _context(request, operation_id))


@ui_view
def progress(request: HttpRequest, operation_id: int) -> HttpResponse:
    return render(request, "web/_operation.html", _context(request, operation_id))
