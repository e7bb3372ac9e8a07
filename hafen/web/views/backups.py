"""The Backups section of the instance page and what its buttons do, each through the service layer.

Back up, restore in place and verify lead to the operation's page; restore into a new instance and
clone show the new instance's admin password once (as `hafen create` prints it), then its create.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from hafen.access import policy as access_policy
from hafen.access.policy import Actor
from hafen.errors import HafenError, InvalidInput
from hafen.instances import backups, services
from hafen.instances.models import Operation
from hafen.web.forms import BackupPolicyForm, NewInstanceFromBackupForm
from hafen.web.views.common import actor, refused, shown_once, ui_view


def section(who: Actor, name: str) -> dict[str, Any]:
    """What the Backups section of the instance page lists: the backups, newest first, and those that
    can be restored (written, with an id)."""
    snapshots = [backups.describe_snapshot(s) for s in backups.snapshots(who, name)]
    return {"snapshots": snapshots, "restorable": [s for s in snapshots if s["status"] == "ok" and s["id"]]}


@ui_view
def listing(request: HttpRequest, name: str) -> HttpResponse:
    """The list of backups, polled by htmx while the instance page is open."""
    who = actor(request)
    instance = services.get_instance(who, name)
    allowed = sorted(access_policy.actions(who, instance.organisation_id))
    return render(request, "web/_backup_list.html", {"i": {"name": name, "allowed": allowed}, **section(who, name)})


def _operation(request: HttpRequest, name: str, start: Any) -> HttpResponse:
    try:
        operation: Operation = start()
    except HafenError as exc:
        return refused(request, exc, "instance", name)
    return redirect("operation", operation.id)


@require_POST
@ui_view
def backup(request: HttpRequest, name: str) -> HttpResponse:
    return _operation(request, name, lambda: backups.backup(actor(request), name))


@require_POST
@ui_view
def restore(request: HttpRequest, name: str) -> HttpResponse:
    """Restore in place; the service layer refuses unless the instance's name was typed again."""
    snapshot = request.POST.get("snapshot", "")
    confirm = request.POST.get("confirm", "")
    return _operation(request, name, lambda: backups.restore(actor(request), name, snapshot, confirm=confirm))


@require_POST
@ui_view
def verify(request: HttpRequest, name: str, snapshot: str) -> HttpResponse:
    return _operation(request, name, lambda: backups.verify(actor(request), name, snapshot))


def _new_instance(request: HttpRequest, name: str, make: Any, headline: Callable[[str], str]) -> HttpResponse:
    """Queue a new instance made from a backup; show its admin password this once."""
    form = NewInstanceFromBackupForm(request.POST)
    if not form.is_valid():
        services.get_instance(actor(request), name)
        return refused(request, InvalidInput("give the new instance's name"), "instance", name)
    new, domain = form.cleaned_data["new"], form.cleaned_data["domain"] or None
    who = actor(request)
    try:
        operation: Operation = make(who, new, domain)
    except HafenError as exc:
        return refused(request, exc, "instance", name)
    back = reverse("operation", args=[operation.id])
    try:
        creds = services.credentials(who, operation.instance_name)
    except HafenError as exc:
        messages.info(request, f"{operation.instance_name} is being made; its credentials: {exc}")
        return redirect(back)
    url = services.url(services.get_instance(who, operation.instance_name))
    return shown_once(
        request, headline(operation.instance_name),
        [("URL", url), ("user name", creds.username), ("password", creds.password)],
        "The admin password is shown this once (the reveal is recorded in the audit log); the instance runs "
        "with it when the operation has finished.", back,
    )


@require_POST
@ui_view
def restore_into(request: HttpRequest, name: str) -> HttpResponse:
    snapshot = request.POST.get("snapshot", "")
    return _new_instance(
        request, name,
        lambda who, new, domain: backups.restore_into(who, name, snapshot, new, domain=domain),
        lambda new: f"{new}: a new instance with the data of backup {snapshot} of {name}",
    )


@require_POST
@ui_view
def clone(request: HttpRequest, name: str) -> HttpResponse:
    return _new_instance(request, name, lambda who, new, domain: backups.clone(who, name, new, domain=domain),
                         lambda new: f"{new}: a clone of {name}")


@require_POST
@ui_view
def policy(request: HttpRequest, name: str) -> HttpResponse:
    form = BackupPolicyForm(request.POST)
    if not form.is_valid():
        services.get_instance(actor(request), name)
        field, errors = next(iter(form.errors.items()))
        return refused(request, InvalidInput(f"{field.replace('_', ' ')}: {errors[0]}"), "instance", name)
    data = form.cleaned_data
    try:
        backups.set_policy(actor(request), name=name, schedule_expr=data["schedule"], keep_daily=data["keep_daily"],
                           keep_weekly=data["keep_weekly"], keep_monthly=data["keep_monthly"],
                           enabled=data["enabled"])
    except HafenError as exc:
        return refused(request, exc, "instance", name)
    messages.success(request, "Backup policy saved.")
    return redirect(reverse("instance", args=[name]) + "#backups")
