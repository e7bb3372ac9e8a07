"""The audit log, newest first; customers see their organisations' entries and their own."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hafen.access import audit as audit_log
from hafen.web.forms import AuditFilter
from hafen.web.views.common import actor, paginate, query_without_page, ui_view

PER_PAGE = 50


@ui_view
def index(request: HttpRequest) -> HttpResponse:
    who = actor(request)
    entries = audit_log.search(who, **AuditFilter.filters(request.GET))
    return render(request, "web/audit.html", {
        "form": AuditFilter(who, request.GET),
        "page": paginate(request, entries, PER_PAGE),
        "query": query_without_page(request),
    })
