"""Charts (instance page, dashboard's fleet view) and the alerts page: htmx fragments over the service layer."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from hafen.errors import HafenError, NotFound
from hafen.instances import monitoring
from hafen.web.views.common import actor, refused, ui_view


@ui_view
def instance_charts(request: HttpRequest, name: str) -> HttpResponse:
    """The instance's charts over the chosen range, as SVG rendered here (a NotFound stays a 404)."""
    range_ = request.GET.get("range", "1h")
    svgs: list[str] = []
    unavailable = ""
    try:
        # the SVG is built from numbers and escaped labels only (hafen.metrics.charts)
        svgs = [mark_safe(svg) for svg in monitoring.chart_svgs(actor(request), name, range_)]
    except NotFound:
        raise
    except HafenError as exc:
        unavailable = str(exc)
    return render(request, "web/_charts.html", {"svgs": svgs, "unavailable": unavailable, "name": name,
                                                "range": range_, "ranges": list(monitoring.RANGES)})


@ui_view
def fleet(request: HttpRequest) -> HttpResponse:
    svgs: list[str] = []
    unavailable = ""
    try:
        svgs = [mark_safe(svg) for svg in monitoring.fleet_svgs(actor(request))]
    except HafenError as exc:
        unavailable = str(exc)
    return render(request, "web/_fleet.html", {"svgs": svgs, "unavailable": unavailable})


@ui_view
def alerts(request: HttpRequest) -> HttpResponse:
    who = actor(request)
    context: dict[str, object] = {"alerts": [], "silences": [], "unavailable": ""}
    try:
        context.update(alerts=monitoring.alerts(who), silences=monitoring.silences(who))
    except HafenError as exc:
        context["unavailable"] = str(exc)
    return render(request, "web/alerts.html", context)


@ui_view
@require_POST
def silence(request: HttpRequest) -> HttpResponse:
    try:
        monitoring.silence(actor(request), request.POST.get("instance", ""), request.POST.get("duration", "2h"),
                           request.POST.get("comment", ""))
    except HafenError as exc:
        return refused(request, exc, "alerts")
    messages.success(request, f"The alerts of {request.POST.get('instance')} are silenced.")
    return redirect("alerts")


@ui_view
@require_POST
def unsilence(request: HttpRequest, silence_id: str) -> HttpResponse:
    try:
        monitoring.unsilence(actor(request), silence_id)
    except HafenError as exc:
        return refused(request, exc, "alerts")
    messages.success(request, "Silence ended.")
    return redirect("alerts")


urlpatterns = [
    path("instances/<slug:name>/charts", instance_charts, name="instance-charts"),
    path("fleet", fleet, name="fleet"),
    path("alerts", alerts, name="alerts"),
    path("alerts/silence", silence, name="alert-silence"),
    path("alerts/silences/<str:silence_id>/end", unsilence, name="alert-unsilence"),
]
