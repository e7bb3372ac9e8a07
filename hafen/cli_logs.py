"""The command line of the central logs: hafen logs (a service's tail, or a search) and hafen errors."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click

from hafen.cli import _backend, _emit, _since, cli
from hafen.errors import InvalidInput


def _until(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return _since(value)
    except InvalidInput:
        raise InvalidInput("--until takes a duration ago like 10m, or a time like 2026-11-22T10:00") from None


def _print(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        stamp = datetime.fromtimestamp(row["ts"]).strftime("%Y-%m-%d %H:%M:%S")
        where = f"{row['instance']}/{row['service']}" if row["instance"] else f"hafen/{row['service']}"
        click.echo(f"{stamp} {where} {row['level'].upper()} {row['message']}")


@cli.command()
@click.argument("name", required=False)
@click.option("--service", "-s", default=None, help="Service (default for a tail: the web service).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--since", default=None, help="A duration such as 10m, or a time.")
@click.option("--tail", type=int, default=None, help="Only the last N lines (of a service's tail).")
@click.option("--grep", "text", default=None, metavar="TEXT", help="Search every log for these words.")
@click.option("--instance", default=None, help="Search this instance's lines (as NAME does).")
@click.option("--org", default=None, help="Search this organisation's instances' lines.")
@click.option("--level", type=click.Choice(["debug", "info", "warning", "error", "critical"]), default=None,
              help="This level and above.")
@click.option("--until", default=None, help="Lines before this (a duration ago, or a time).")
@click.option("--limit", type=click.IntRange(1, 5000), default=None, help="At most N lines (default 100).")
@click.option("--json", "as_json", is_flag=True)
def logs(name: str | None, service: str | None, follow: bool, since: str | None, tail: int | None,
         text: str | None, instance: str | None, org: str | None, level: str | None, until: str | None,
         limit: int | None, as_json: bool) -> None:
    """Print a service's log (NAME [--service S]: from the engine), or search the central log store.

    With --grep, --instance, --org, --level, --until, --limit or --json (or without NAME) it searches
    every service's lines that you may see, oldest of the newest N first.
    """
    searching = any(v is not None for v in (text, instance, org, level, until, limit)) or as_json or not name
    backend = _backend()
    if not searching:
        assert name is not None
        for line in backend.logs(name, service, follow=follow, since=_since(since), tail=tail):
            click.echo(line)
        return
    if name and instance and name != instance:
        raise InvalidInput("give the instance once: NAME or --instance")
    if tail is not None:
        raise InvalidInput("--tail is for a service's tail; a search takes --limit")
    filters: dict[str, Any] = {"text": text or "", "instance": instance or name or "", "service": service or "",
                               "org": org or "", "level": level or "", "since": _since(since),
                               "until": _until(until), "limit": limit or 100}
    rows = backend.search_logs(**filters)
    if as_json:
        _emit(rows)
    else:
        _print(rows[::-1])
    last = rows[0]["id"] if rows else 0
    while follow:
        time.sleep(1)
        rows = backend.search_logs(**{**filters, "since": None, "until": None, "after_id": last, "limit": 5000})
        if rows:
            last = rows[0]["id"]
            if as_json:
                _emit(rows[::-1])
            else:
                _print(rows[::-1])


@cli.command()
@click.option("--instance", default=None, help="Only this instance's errors.")
@click.option("--json", "as_json", is_flag=True)
def errors(instance: str | None, as_json: bool) -> None:
    """The kinds of error in the instances' logs (tracebacks and error lines grouped by signature)."""
    groups = _backend().errors(instance or "")
    if as_json:
        _emit(groups)
        return
    if not groups:
        click.echo("no errors" + (f" of {instance}" if instance else ""))
        return
    for group in groups:
        where = group["instance"] or "hafen"
        click.echo(f"#{group['id']} {where}/{group['service']} {group['kind']}: {group['message']} "
                   f"(x{group['count']}, first {group['first_seen'][:19]}, last {group['last_seen'][:19]})")
