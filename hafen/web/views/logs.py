"""The log page (search with filters, live tail by polling) and the grouped errors."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hafen.errors import HafenError, InvalidInput, NotFound
from hafen.logs import services as logs
from hafen.logs.parse import LEVELS
from hafen.web.views.common import actor, ui_view

FIELDS = ("q", "instance", "service", "org", "level", "since", "until")


def _time(value: str, what: str) -> float | None:
    """A duration ago (15m, 2h, 7d), a Unix time, or a local time (2026-11-22T10:00)."""
    value = value.strip()
    if not value:
        return None
    match = re.fullmatch(r"(\d+)([smhd])", value)
    if match:
        return time.time() - int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if re.fullmatch(r"\d{9,11}(\.\d+)?", value):
        return float(value)
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise InvalidInput(f"{what}: a duration like 15m or 2h, or a time like 2026-11-22T10:00") from None


def _search(request: HttpRequest, **extra: Any) -> tuple[list[dict[str, Any]], str]:
    get = request.GET
    try:
        rows = logs.search(actor(request), text=get.get("q", ""), instance=get.get("instance", ""),
                           service=get.get("service", ""), org=get.get("org", ""), level=get.get("level", ""),
                           since=_time(get.get("since", ""), "since"), until=_time(get.get("until", ""), "until"),
                           limit=200, **extra)
    except HafenError as exc:
        return [], str(exc)
    return rows[::-1], ""


@ui_view
def index(request: HttpRequest) -> HttpResponse:
    rows, problem = _search(request)
    return render(request, "web/logs.html", {
        "rows": rows, "problem": problem, "levels": LEVELS, "values": {f: request.GET.get(f, "") for f in FIELDS},
        "live": request.GET.get("live") == "1", "last": rows[-1]["id"] if rows else 0,
    })


@ui_view
def tail(request: HttpRequest) -> HttpResponse:
    """What came after the last line shown (htmx polls it while Live is on)."""
    try:
        after = int(request.GET.get("after", "0"))
    except ValueError:
        after = 0
    rows, _problem = _search(request, after_id=after)
    return render(request, "web/_log_rows.html", {"rows": rows, "last": rows[-1]["id"] if rows else after, "live": True,
                                                  "query": request.GET.urlencode()})


@ui_view
def errors(request: HttpRequest) -> HttpResponse:
    instance = request.GET.get("instance", "")
    groups = [logs.describe_group(g) for g in logs.error_groups(actor(request), instance)]
    return render(request, "web/errors.html", {"groups": groups, "instance": instance})


@ui_view
def error(request: HttpRequest, group_id: int) -> HttpResponse:
    group = logs.error_group(actor(request), group_id)
    if group is None:
        raise NotFound(f"no error group {group_id}")
    return render(request, "web/error.html", {"group": logs.describe_group(group)})
