"""The event calendar: the coming events of every instance one may see, the capacity forecast for
operators (a chart drawn as SVG here, on the server), and an instance's event form and remove buttons."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from hafen.errors import HafenError, InvalidInput
from hafen.instances import calendar
from hafen.web.views.common import actor, refused, ui_view

CHART_WIDTH, CHART_HEIGHT = 960, 180
GIB = 1024**3


def chart(forecast: dict[str, Any]) -> dict[str, Any]:
    """The forecast as bars (memory needed per hour) under a line (the nodes' memory), in SVG units."""
    hours = forecast["hours"]
    capacity = (forecast["capacity"] or {}).get("memory_bytes", 0)
    top = max([capacity, *(h["memory_bytes"] for h in hours)]) or 1
    width = CHART_WIDTH / max(len(hours), 1)
    bars = []
    for index, hour in enumerate(hours):
        height = hour["memory_bytes"] / top * CHART_HEIGHT
        bars.append({"x": round(index * width, 2), "y": round(CHART_HEIGHT - height, 2), "w": round(width, 2),
                     "h": round(height, 2), "over": hour["over"], "events": bool(hour["events"]),
                     "title": f"{hour['start'][:13].replace('T', ' ')}:00 UTC: "
                              f"{hour['memory_bytes'] / GIB:.1f} GiB"})
    days = [{"x": round(index * width, 2), "label": hour["start"][5:10]}
            for index, hour in enumerate(hours) if hour["start"][11:13] == "00"]
    return {"bars": bars, "days": days, "width": CHART_WIDTH, "height": CHART_HEIGHT,
            "capacity_y": round(CHART_HEIGHT - capacity / top * CHART_HEIGHT, 2) if capacity else None,
            "capacity_gib": round(capacity / GIB, 1), "top_gib": round(top / GIB, 1)}


@ui_view
def index(request: HttpRequest) -> HttpResponse:
    who = actor(request)
    context: dict[str, Any] = {"events": [calendar.describe(e) for e in calendar.coming(who)]}
    if who.is_operator:
        forecast = calendar.forecast(who)
        context.update(forecast=forecast, chart=chart(forecast))
    return render(request, "web/calendar.html", context)


@require_POST
@ui_view
def add(request: HttpRequest, name: str) -> HttpResponse:
    try:
        participants = int(request.POST.get("participants", "").strip() or "0")
    except ValueError:
        participants = 0
    try:
        if not participants:
            raise InvalidInput("participants: give a whole number, 1 or more")
        calendar.add(actor(request), name, start=request.POST.get("start", "")[:64],
                     end=request.POST.get("end", "")[:64], participants=participants,
                     title=request.POST.get("title", "")[:100])
    except HafenError as exc:
        return refused(request, exc, "instance", name)
    messages.success(request, "Event planned.")
    return redirect(reverse("instance", args=[name]) + "#events")


@require_POST
@ui_view
def remove(request: HttpRequest, name: str, event_id: int) -> HttpResponse:
    try:
        calendar.remove(actor(request), name, event_id)
    except HafenError as exc:
        return refused(request, exc, "instance", name)
    messages.success(request, "Event removed.")
    return redirect(reverse("instance", args=[name]) + "#events")
