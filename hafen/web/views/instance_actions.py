"""What the buttons of the instance page do: each a POST through the service layer.

An action that starts an operation leads to the operation's page; a refusal
goes back to the instance page with the error's one line (a lock's reason, a
role that does not allow it).
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from hafen.access.policy import Actor
from hafen.errors import HafenError, InvalidInput, NotFound
from hafen.instances import elastic, services, updates
from hafen.instances.models import Operation
from hafen.instances.policy import KEYS as POLICY_KEYS
from hafen.web.forms import ScaleForm
from hafen.web.views.common import actor, is_htmx, refused, shown_once, ui_view

Change = Callable[[Actor, str], Operation]
CHANGES: dict[str, Change] = {
    "start": services.start,
    "stop": services.stop,
    "restart": services.restart,
    "delete": services.delete,
}


def _run(request: HttpRequest, name: str, change: Change) -> HttpResponse:
    try:
        operation = change(actor(request), name)
    except HafenError as exc:
        return refused(request, exc, "instance", name)
    return redirect("operation", operation.id)


@require_POST
@ui_view
def change(request: HttpRequest, name: str, action: str) -> HttpResponse:
    return _run(request, name, CHANGES[action])


@require_POST
@ui_view
def scale(request: HttpRequest, name: str) -> HttpResponse:
    form = ScaleForm(request.POST)
    if not form.is_valid():
        return refused(request, InvalidInput("replicas: give a whole number of 0 or more"), "instance", name)
    replicas: int = form.cleaned_data["replicas"]
    return _run(request, name, lambda who, n: services.scale(who, n, replicas))


@require_POST
@ui_view
def policy(request: HttpRequest, name: str) -> HttpResponse:
    """The policy's fields the form has: an empty field is the default (the organisation's, size's or
    installation's)."""
    values = {key: request.POST.get(key, "").strip()[:32] or "default" for key in POLICY_KEYS
              if key in request.POST}
    try:
        elastic.set_policy(actor(request), name, **values)
    except HafenError as exc:
        return refused(request, exc, "instance", name)
    messages.success(request, "Sleep policy saved.")
    return redirect(reverse("instance", args=[name]) + "#sleep")


@require_POST
@ui_view
def update(request: HttpRequest, name: str) -> HttpResponse:
    version = request.POST.get("version", "").strip()[:32] or None
    return _run(request, name, lambda who, n: updates.update(who, n, version))


@require_POST
@ui_view
def erase(request: HttpRequest, name: str) -> HttpResponse:
    if request.POST.get("confirm", "").strip() != name:
        services.get_instance(actor(request), name)
        return refused(request, InvalidInput(f"type the name {name} to erase it"), "instance", name)
    return _run(request, name, services.erase)


@require_POST
@ui_view
def new_password(request: HttpRequest, name: str) -> HttpResponse:
    try:
        operation, password = services.new_admin_password(actor(request), name)
    except HafenError as exc:
        return refused(request, exc, "instance", name)
    return shown_once(
        request, f"New admin password of {name}", [("password", password)],
        "Shown this once; the instance takes it when the operation has finished.",
        reverse("operation", args=[operation.id]),
    )


@require_POST
@never_cache
@ui_view
def credentials(request: HttpRequest, name: str) -> HttpResponse:
    """Reveal the admin credentials in place; the service layer writes the reveal to the audit log."""
    try:
        found = services.credentials(actor(request), name)
    except HafenError as exc:
        if is_htmx(request) and not isinstance(exc, NotFound):
            return render(request, "web/_credentials.html", {"error": str(exc)})
        return refused(request, exc, "instance", name)
    if is_htmx(request):
        return render(request, "web/_credentials.html", {"credentials": found})
    return shown_once(request, f"Credentials of {name}", [("user name", found.username), ("password", found.password)],
                      "The reveal is recorded in the audit log.", reverse("instance", args=[name]))


@require_POST
@ui_view
def add_lock(request: HttpRequest, name: str) -> HttpResponse:
    try:
        services.lock(actor(request), name, request.POST.getlist("actions"), request.POST.get("reason", ""))
    except HafenError as exc:
        return refused(request, exc, "instance", name)
    messages.success(request, "Lock added.")
    return redirect("instance", name)


@require_POST
@ui_view
def remove_lock(request: HttpRequest, name: str, lock_id: int) -> HttpResponse:
    try:
        services.unlock(actor(request), name, lock_id)
    except HafenError as exc:
        return refused(request, exc, "instance", name)
    messages.success(request, "Lock removed.")
    return redirect("instance", name)
