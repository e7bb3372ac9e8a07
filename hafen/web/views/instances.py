"""The pages of instances: create, detail, and the parts of the detail page that htmx refreshes."""

from __future__ import annotations

from itertools import islice
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from hafen.config import get_settings
from hafen.errors import HafenError, NotFound
from hafen.instances import calendar, services
from hafen.web.forms import BackupPolicyForm, LockForm, NewInstanceForm, creatable_organisations
from hafen.web.views import backups
from hafen.web.views.common import actor, ui_view

LOG_LINES = 50


@ui_view
def new(request: HttpRequest) -> HttpResponse:
    who = actor(request)
    organisations = creatable_organisations(who)
    form = NewInstanceForm(organisations, request.POST or None)
    if request.method == "POST" and organisations and form.is_valid():
        data = form.cleaned_data
        try:
            operation = services.create_instance(
                who, data["name"], data["app"], version=data["version"] or None, domain=data["domain"] or None,
                size=data["size"], organisation=data["organisation"] or None,
            )
        except HafenError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Creating {operation.instance_name}.")
            return redirect("operation", operation.id)
    return render(request, "web/instance_new.html", {"form": form, "may_create": bool(organisations)})


def _status(request: HttpRequest, name: str) -> dict[str, Any]:
    who = actor(request)
    return {"i": services.detail(who, services.get_instance(who, name))}


@ui_view
def detail(request: HttpRequest, name: str) -> HttpResponse:
    context = _status(request, name)
    policy = context["i"]["backups"]["policy"]
    who = actor(request)
    context.update(backups.section(who, name), lock_form=LockForm(),
                   policy_form=BackupPolicyForm(initial=policy, auto_id="policy-%s"),
                   events=[calendar.describe(e) for e in calendar.coming(who, name)],
                   lead=get_settings().event_lead)
    return render(request, "web/instance.html", context)


@ui_view
def status(request: HttpRequest, name: str) -> HttpResponse:
    return render(request, "web/_instance_status.html", _status(request, name))


@ui_view
def logs(request: HttpRequest, name: str) -> HttpResponse:
    """The last lines of the web service's log, or why there are none."""
    lines: list[str] = []
    unavailable = ""
    try:
        lines = list(islice(services.logs(actor(request), name, None, tail=LOG_LINES), LOG_LINES))
    except NotFound:
        raise
    except HafenError as exc:
        unavailable = str(exc)
    return render(request, "web/_instance_logs.html", {"lines": lines, "unavailable": unavailable})
