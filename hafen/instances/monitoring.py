"""Charts and alerts as the CLI, API and UI see them, with the access checks.

The queries go to Prometheus and Alertmanager through hafen (a server-side proxy): a customer's query
is always one of the fixed queries below for an instance the customer may see, or the fleet's queries
narrowed to the customer's instances; the raw query API is never exposed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hafen.access import audit
from hafen.access.policy import Action, Actor
from hafen.config import get_settings
from hafen.errors import InvalidInput, NotFound
from hafen.instances import services
from hafen.instances.policy import parse_duration
from hafen.metrics import charts
from hafen.metrics.clients import Alertmanager, Prometheus, Series

# name: (seconds shown, step, the rate's window)
RANGES: dict[str, tuple[int, int, str]] = {
    "1h": (3600, 30, "2m"),
    "1d": (86400, 600, "10m"),
    "1w": (7 * 86400, 3600, "1h"),
}


@dataclass
class Chart:
    key: str
    title: str
    unit: str
    lines: list[tuple[str, str]]  # (label, PromQL)


def instance_charts(name: str, window: str) -> list[Chart]:
    """The instance page's charts: fixed queries, the instance's name the only input (a checked slug)."""
    sel = f'instance="{name}"'
    return [
        Chart("cpu", "CPU (% of a core)", "%", [
            ("web", f'100 * sum(rate(hafen_container_cpu_seconds_total{{{sel},service="web"}}[{window}]))'),
            ("all", f"100 * sum(rate(hafen_container_cpu_seconds_total{{{sel}}}[{window}]))"),
        ]),
        Chart("memory", "Memory of the web service against its limit", "bytes", [
            ("used", f'sum(hafen_container_memory_bytes{{{sel},service="web"}})'),
            ("limit", f'sum(hafen_container_memory_limit_bytes{{{sel},service="web"}})'),
        ]),
        Chart("requests", "Requests per second at the edge", "", [
            ("all", f"sum(rate(hafen_edge_requests_total{{{sel}}}[{window}]))"),
            ("errors (5xx)", f'sum(rate(hafen_edge_requests_total{{{sel},code=~"5.."}}[{window}])) or vector(0)'),
        ]),
        Chart("websockets", "Open requests and websockets", "", [
            ("open", f"sum(hafen_edge_open_requests{{{sel}}})"),
        ]),
        Chart("replicas", "Web replicas", "", [
            ("running", f'sum(hafen_instance_running_replicas{{{sel},service="web"}})'),
            ("desired", f'sum(hafen_instance_replicas{{{sel},service="web"}})'),
        ]),
    ]


def _range(value: str) -> tuple[int, int, str]:
    if value not in RANGES:
        raise InvalidInput(f"range must be one of {', '.join(RANGES)}, not {value!r}")
    return RANGES[value]


def chart_data(actor: Actor, name: str, range_: str = "1h") -> dict[str, Any]:
    """The instance's chart data: {start, end, charts: [{key, title, unit, series: {label: [[t, v]...]}}]}."""
    instance = services.authorized(actor, Action.VIEW, name)
    seconds, step, window = _range(range_)
    end = time.time()
    start = end - seconds
    prom = Prometheus(get_settings())
    result = []
    for chart in instance_charts(instance.name, window):
        series: dict[str, list[tuple[float, float]]] = {}
        for label, query in chart.lines:
            found = prom.range(query, start, end, step)
            series[label] = found[0].points if found else []
        result.append({"key": chart.key, "title": chart.title, "unit": chart.unit, "series": series})
    return {"instance": instance.name, "range": range_, "start": start, "end": end, "charts": result}


def chart_svgs(actor: Actor, name: str, range_: str = "1h") -> list[str]:
    data = chart_data(actor, name, range_)
    return [charts.line_chart(c["title"], [(label, Series({}, points)) for label, points in c["series"].items()],
                              c["unit"], data["start"], data["end"]) for c in data["charts"]]


def _visible(actor: Actor) -> str | None:
    """A matcher narrowing fleet queries to the actor's instances (None: an operator sees all)."""
    if actor.is_operator:
        return None
    names = sorted(services.instances_of(actor).values_list("name", flat=True))
    return "^(" + "|".join(names) + ")$" if names else "^$"  # instance names are slugs: no regex syntax


FLEET = {
    "busiest": ("Busiest instances (CPU, % of a core)", "%",
                "topk(8, 100 * sum by (instance) "
                "(rate(hafen_container_cpu_seconds_total{{instance!=\"\"{sel}}}[5m])))"),
    "memory": ("Nearest their memory limit (web)", "%",
               "topk(8, 100 * max by (instance) (hafen_container_memory_bytes{{service=\"web\",instance!=\"\"{sel}}}"
               " / hafen_container_memory_limit_bytes{{service=\"web\",instance!=\"\"{sel}}}))"),
    "errors": ("With errors (5xx per minute, last 15 minutes)", "",
               "topk(8, 60 * sum by (instance) (rate(hafen_edge_requests_total{{code=~\"5..\"{sel}}}[15m])) > 0)"),
}


def fleet(actor: Actor) -> dict[str, list[tuple[str, float]]]:
    """The dashboard's fleet view: for each of FLEET, the instances and their values, largest first."""
    visible = _visible(actor)
    sel = f',instance=~"{visible}"' if visible is not None else ""
    prom = Prometheus(get_settings())
    out = {}
    for key, (_title, _unit, query) in FLEET.items():
        rows = [(labels.get("instance", ""), value) for labels, value in prom.instant(query.format(sel=sel))]
        out[key] = sorted(rows, key=lambda r: -r[1])
    return out


def fleet_svgs(actor: Actor) -> list[str]:
    data = fleet(actor)
    return [charts.bar_chart(title, data[key], unit, 100.0 if key == "memory" else None)
            for key, (title, unit, _q) in FLEET.items()]


# -- alerts --------------------------------------------------------------------------------------------


def _may_see(actor: Actor, labels: dict[str, str]) -> bool:
    if actor.is_operator:
        return True
    instance = labels.get("instance", "")
    return bool(instance) and services.instances_of(actor).filter(name=instance).exists()


def alerts(actor: Actor) -> list[dict[str, Any]]:
    """The alerts firing now: every one for operators, those of their instances for customers."""
    rows = []
    for alert in Alertmanager(get_settings()).alerts():
        labels = alert.get("labels", {})
        if not _may_see(actor, labels):
            continue
        rows.append({
            "name": labels.get("alertname", ""), "instance": labels.get("instance", ""),
            "organisation": labels.get("organisation", ""), "severity": labels.get("severity", ""),
            "summary": alert.get("annotations", {}).get("summary", ""), "since": alert.get("startsAt", ""),
            "state": alert.get("status", {}).get("state", ""),
        })
    return sorted(rows, key=lambda r: (r["instance"], r["name"]))


def silences(actor: Actor) -> list[dict[str, Any]]:
    rows = []
    for s in Alertmanager(get_settings()).silences():
        if s.state == "expired" or not _may_see(actor, {"instance": s.instance}):
            continue
        rows.append({"id": s.id, "instance": s.instance, "starts_at": s.starts_at, "ends_at": s.ends_at,
                     "created_by": s.created_by, "comment": s.comment, "state": s.state})
    return rows


def silence(actor: Actor, name: str, duration: str, comment: str = "") -> dict[str, Any]:
    """Silence an instance's alerts for a maintenance window (its admins and the operators may)."""
    with audit.audited(actor, "silence", str(name)[:32], duration=duration, comment=comment[:200]) as note:
        instance = services.authorized(actor, Action.POLICY, name, note)
        seconds = parse_duration(duration, "for")
        if seconds is None:
            raise InvalidInput("for: a silence ends; give a duration like 2h")
        silence_id = Alertmanager(get_settings()).silence(instance.name, timedelta(seconds=seconds), actor.name,
                                                          comment)
        note.detail["silence"] = silence_id
    return {"id": silence_id, "instance": instance.name, "for": duration, "comment": comment}


def unsilence(actor: Actor, silence_id: str) -> None:
    manager = Alertmanager(get_settings())
    found = next((s for s in manager.silences() if s.id == silence_id and s.state != "expired"), None)
    if found is None or not _may_see(actor, {"instance": found.instance}):
        raise NotFound(f"no silence {silence_id!r}")
    with audit.audited(actor, "unsilence", found.instance, silence=silence_id) as note:
        if not actor.is_operator:
            services.authorized(actor, Action.POLICY, found.instance, note)
        manager.expire(silence_id)
