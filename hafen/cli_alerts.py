"""The command line of the alerts: hafen alerts list, silence, silences, unsilence (see README)."""

from __future__ import annotations

from typing import Any

import click

from hafen.cli import _backend, _emit, _table, cli, out


class _Alerts:
    """The service layer on the control plane's host, its REST API with --url."""

    def __init__(self) -> None:
        backend = _backend()
        self.remote = getattr(backend, "_call", None) if backend.__class__.__name__ == "RemoteBackend" else None
        if self.remote is None:
            from hafen.access.policy import Actor

            self.actor = Actor.local()

    def alerts(self) -> list[dict[str, Any]]:
        if self.remote is not None:
            result: list[dict[str, Any]] = self.remote("GET", "/alerts")
            return result
        from hafen.instances import monitoring

        return monitoring.alerts(self.actor)

    def silences(self) -> list[dict[str, Any]]:
        if self.remote is not None:
            result: list[dict[str, Any]] = self.remote("GET", "/silences")
            return result
        from hafen.instances import monitoring

        return monitoring.silences(self.actor)

    def silence(self, instance: str, duration: str, comment: str) -> dict[str, Any]:
        if self.remote is not None:
            result: dict[str, Any] = self.remote("POST", "/silences", json={
                "instance": instance, "duration": duration, "comment": comment})
            return result
        from hafen.instances import monitoring

        return monitoring.silence(self.actor, instance, duration, comment)

    def unsilence(self, silence_id: str) -> None:
        if self.remote is not None:
            self.remote("DELETE", f"/silences/{silence_id}")
            return
        from hafen.instances import monitoring

        monitoring.unsilence(self.actor, silence_id)


@cli.group()
def alerts() -> None:
    """Alerts from Prometheus's rules, and silences for a maintenance window (through Alertmanager)."""


@alerts.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def alerts_list(as_json: bool) -> None:
    """The alerts firing now, and the silences in force."""
    api = _Alerts()
    firing, silences = api.alerts(), api.silences()
    if as_json:
        _emit({"alerts": firing, "silences": silences})
        return
    table = _table("ALERT", "INSTANCE", "ORGANISATION", "SEVERITY", "STATE", "SINCE", "SUMMARY")
    for a in firing:
        table.add_row(a["name"], a["instance"] or "-", a["organisation"] or "-", a["severity"], a["state"],
                      a["since"][:19], a["summary"])
    out.print(table if firing else "no alert fires")
    if silences:
        table = _table("SILENCE", "INSTANCE", "UNTIL", "BY", "COMMENT")
        for s in silences:
            table.add_row(s["id"], s["instance"], s["ends_at"][:19], s["created_by"], s["comment"])
        out.print(table)


@alerts.command(name="silence")
@click.argument("instance")
@click.option("--for", "duration", default="2h", show_default=True, help="How long: 30m, 2h, 1d ...")
@click.option("--comment", default="", help="Why (shown with the silence).")
@click.option("--json", "as_json", is_flag=True)
def alerts_silence(instance: str, duration: str, comment: str, as_json: bool) -> None:
    """Silence every alert of INSTANCE for a while (a maintenance window)."""
    result = _Alerts().silence(instance, duration, comment)
    if as_json:
        _emit(result)
        return
    out.print(f"{instance}: alerts silenced for {duration} (silence {result['id']})")


@alerts.command(name="unsilence")
@click.argument("silence_id")
def alerts_unsilence(silence_id: str) -> None:
    """End a silence before its time."""
    _Alerts().unsilence(silence_id)
    out.print(f"silence {silence_id} ended")
