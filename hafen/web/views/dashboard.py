"""The list of instances, with filters, refreshed by htmx while it is open."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hafen.instances import backups, calendar, services
from hafen.web.forms import InstanceFilter, creatable_organisations
from hafen.web.views.common import actor, paginate, query_without_page, ui_view


def _rows(request: HttpRequest) -> dict[str, Any]:
    instances = services.list_instances(actor(request), **InstanceFilter.filters(request.GET))
    page = paginate(request, instances, InstanceFilter.page_size(request.GET))
    return {"page": page, "instances": backups.describe_all(list(page)), "query": query_without_page(request)}


@ui_view
def dashboard(request: HttpRequest) -> HttpResponse:
    who = actor(request)
    context = _rows(request)
    context.update(form=InstanceFilter(who, request.GET), may_create=bool(creatable_organisations(who)))
    if who.is_operator and calendar.coming(who).exists():  # the forecast only when there is an event to plan for
        context["over_capacity"] = calendar.forecast(who)["over"]
    return render(request, "web/dashboard.html", context)


@ui_view
def rows(request: HttpRequest) -> HttpResponse:
    return render(request, "web/_instance_rows.html", _rows(request))
