"""Small clients of Prometheus's query API and Alertmanager's API v2, both on the loopback.

Errors become one HafenError with a clear line: the pages show it in place of a chart, the CLI prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from hafen.config import Settings
from hafen.errors import Conflict, HafenError, InvalidInput

TIMEOUT = 10.0


class MetricsUnavailable(HafenError):
    """Prometheus or Alertmanager does not answer (not started yet, or metrics are off)."""

    exit_code = 5
    http_status = 503
    code = "metrics_unavailable"


class MetricsOff(Conflict):
    """The installation runs without Prometheus and Alertmanager (HAFEN_METRICS=false)."""


def require_metrics(settings: Settings) -> None:
    if not settings.metrics:
        raise MetricsOff("metrics are turned off in this installation (HAFEN_METRICS=false)")


@dataclass
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (epoch seconds, value)


def _get(url: str, params: dict[str, Any], what: str) -> Any:
    try:
        response = httpx.get(url, params=params, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise MetricsUnavailable(f"{what} does not answer ({exc.__class__.__name__})") from exc
    if response.status_code >= 400:
        raise HafenError(f"{what}: {response.text.strip()[:200]}")
    return response.json()


class Prometheus:
    def __init__(self, settings: Settings) -> None:
        require_metrics(settings)
        self.base = f"http://127.0.0.1:{settings.prometheus_port}"

    def range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        data = _get(f"{self.base}/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step},
                    "Prometheus")
        return [Series(r["metric"], [(float(t), _number(v)) for t, v in r["values"]])
                for r in data["data"]["result"]]

    def instant(self, query: str) -> list[tuple[dict[str, str], float]]:
        data = _get(f"{self.base}/api/v1/query", {"query": query}, "Prometheus")
        return [(r["metric"], _number(r["value"][1])) for r in data["data"]["result"]]

    def targets(self) -> list[dict[str, Any]]:
        data = _get(f"{self.base}/api/v1/targets", {"state": "active"}, "Prometheus")
        targets: list[dict[str, Any]] = data["data"]["activeTargets"]
        return targets


def _number(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else 0.0


@dataclass
class Silence:
    id: str
    instance: str
    starts_at: str
    ends_at: str
    created_by: str
    comment: str
    state: str


class Alertmanager:
    def __init__(self, settings: Settings) -> None:
        require_metrics(settings)
        self.base = f"http://127.0.0.1:{settings.alertmanager_port}/api/v2"

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = _get(f"{self.base}/alerts", {"silenced": "true", "inhibited": "true"},
                                            "Alertmanager")
        return alerts

    def silences(self) -> list[Silence]:
        found = []
        for s in _get(f"{self.base}/silences", {}, "Alertmanager"):
            instance = next((m["value"] for m in s["matchers"] if m["name"] == "instance"), "")
            found.append(Silence(s["id"], instance, s["startsAt"], s["endsAt"], s.get("createdBy", ""),
                                 s.get("comment", ""), s["status"]["state"]))
        return found

    def silence(self, instance: str, duration: timedelta, author: str, comment: str) -> str:
        """Silence every alert of one instance for a while (a maintenance window); return its id."""
        if duration <= timedelta(0):
            raise InvalidInput("a silence needs a positive duration")
        now = datetime.now(UTC)
        body = {"matchers": [{"name": "instance", "value": instance, "isRegex": False, "isEqual": True}],
                "startsAt": now.isoformat(), "endsAt": (now + duration).isoformat(),
                "createdBy": author, "comment": comment or "maintenance window"}
        try:
            response = httpx.post(f"{self.base}/silences", json=body, timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(f"Alertmanager does not answer ({exc.__class__.__name__})") from exc
        if response.status_code >= 400:
            raise HafenError(f"Alertmanager: {response.text.strip()[:200]}")
        return str(response.json()["silenceID"])

    def expire(self, silence_id: str) -> None:
        try:
            response = httpx.delete(f"{self.base}/silence/{silence_id}", timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(f"Alertmanager does not answer ({exc.__class__.__name__})") from exc
        if response.status_code >= 400:
            raise HafenError(f"Alertmanager: {response.text.strip()[:200]}")
