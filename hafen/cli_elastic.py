"""The command line of elastic capacity: `hafen policy NAME [--idle D|never|default] [--deep-sleep ...]`,
and what `hafen show` says of sleep."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from rich.text import Text

from hafen.cli import _backend, _emit, _table, cli, org, out

DURATION = "a duration (20s, 30m, 24h), never, or default"


def show_elastic(data: dict[str, Any] | None, decisions: int = 3) -> None:
    """The lines of `hafen show` and `hafen policy`: policy, sleep, last request, latest decisions."""
    if not data:
        return
    policy = data["policy"]
    out.print(f"{'sleeps after':<13} {policy['idle']['value']} ({policy['idle']['source']}), deep sleep after "
              f"{policy['deep_sleep']['value']} ({policy['deep_sleep']['source']})")
    hold = policy["hold"]
    out.print(f"{'wakes with':<13} " + (f"requests held up to {hold['value']}" if hold["seconds"] else
                                        "the waking page for every request") + f" ({hold['source']})")
    if policy["max"]["number"] is None:
        out.print(f"{'autoscaling':<13} off ({policy['max']['source']})")
    else:
        out.print(f"{'autoscaling':<13} {policy['min']['value']} to {policy['max']['value']} web replicas "
                  f"({policy['max']['source']}), aiming at {policy['target_inflight']['value']} open requests and "
                  f"{policy['target_cpu']['value']} CPU per replica")
    if data["sleep"]:
        out.print(f"{'asleep':<13} {data['sleep']} since {(data['slept_at'] or '-')[:19].replace('T', ' ')}")
    last = data["last_request_at"]
    out.print(f"{'last request':<13} {last[:19].replace('T', ' ') if last else 'none seen'}")
    for decision in data["decisions"][:decisions]:
        out.print(Text.assemble(f"{'decided':<13} {decision['at'][:19].replace('T', ' ')}  ",
                                (f"{decision['action']:<10}", "bold"), f" {decision['reason']}"), soft_wrap=True)


def policy_options(command: Callable[..., None]) -> Callable[..., None]:
    """The policy's keys as options (of an instance, or an organisation's defaults), gathered in `changes`."""
    options = [
        click.option("--idle", help=f"Sleep after this long without a request: {DURATION}."),
        click.option("--deep-sleep", "deep_sleep", help=f"Stop the database and cache too after: {DURATION}."),
        click.option("--hold", help="Hold a request to a sleeping instance until it answers, for up to: off, 5s, "
                                    "10s, 20s, 30s, 60s (or default); else the waking page at once."),
        click.option("--min", "min_", help="Autoscaling: the fewest web replicas (1-32, or default)."),
        click.option("--max", "max_", help="Autoscaling: the most web replicas (1-32; off: none; or default)."),
        click.option("--target-inflight", help="Autoscaling: open requests per replica to aim at (or default)."),
        click.option("--target-cpu", help="Autoscaling: CPU per replica to aim at, % of its limit (or default)."),
    ]

    @functools.wraps(command)
    def gathered(*args: Any, idle: str | None, deep_sleep: str | None, hold: str | None, min_: str | None,
                 max_: str | None, target_inflight: str | None, target_cpu: str | None, **kwargs: Any) -> None:
        given = {"idle": idle, "deep_sleep": deep_sleep, "hold": hold, "min": min_, "max": max_,
                 "target_inflight": target_inflight, "target_cpu": target_cpu}
        command(*args, changes={k: v for k, v in given.items() if v is not None}, **kwargs)

    for option in reversed(options):
        gathered = option(gathered)
    return gathered


@cli.command()
@click.argument("name")
@policy_options
@click.option("--json", "as_json", is_flag=True)
def policy(name: str, changes: dict[str, str], as_json: bool) -> None:
    """Show or set when an instance sleeps (scaled to zero, woken by the first request) and how its web
    service scales with its load."""
    data = _backend().policy(name, changes)
    if as_json:
        _emit(data)
        return
    show_elastic(data, decisions=10)


@cli.group()
def event() -> None:
    """An instance's events: before and during one it is awake, with the web replicas it needs."""


@event.command(name="add")
@click.argument("name")
@click.option("--start", required=True, help="ISO time, e.g. 2026-12-01T09:00 (UTC) or 2026-12-01T09:00+01:00")
@click.option("--end", required=True, help="ISO time, as --start")
@click.option("--participants", type=int, required=True, help="expected participants")
@click.option("--title", default="", help="what the event is")
@click.option("--json", "as_json", is_flag=True)
def event_add(name: str, start: str, end: str, participants: int, title: str, as_json: bool) -> None:
    """Plan an event of an instance."""
    data = _backend().event_add(name, start, end, participants, title)
    if as_json:
        _emit(data)
        return
    out.print(f"event {data['id']} of {name}: {data['start_at'][:16].replace('T', ' ')} to "
              f"{data['end_at'][:16].replace('T', ' ')} UTC, {data['participants']} participants, "
              f"{data['web_replicas']} web replica(s), limits of size {data['size']}", soft_wrap=True)


@event.command(name="list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
def event_list(name: str | None, as_json: bool) -> None:
    """The coming events (of one instance, with a name)."""
    rows = _backend().events(name)
    if as_json:
        _emit(rows)
        return
    table = _table("ID", "INSTANCE", "START (UTC)", "END (UTC)", "PARTICIPANTS", "REPLICAS", "SIZE", "TITLE")
    for row in rows:
        table.add_row(str(row["id"]), row["instance"], row["start_at"][:16].replace("T", " "),
                      row["end_at"][:16].replace("T", " "), str(row["participants"]), str(row["web_replicas"]),
                      row["size"], Text(row["title"]))
    out.print(table)


@event.command(name="remove")
@click.argument("name")
@click.argument("event_id", type=int)
def event_remove(name: str, event_id: int) -> None:
    """Take an event out of the calendar."""
    _backend().event_remove(name, event_id)
    out.print(f"event {event_id} of {name} removed")


@org.command(name="policy")
@click.argument("slug")
@policy_options
@click.option("--json", "as_json", is_flag=True)
def org_policy(slug: str, changes: dict[str, str], as_json: bool) -> None:
    """Show or set the defaults of an organisation's instances' policy (operators and its admins)."""
    data = _backend().org_policy(slug, changes)
    if as_json:
        _emit(data)
        return
    if not data["policy"]:
        out.print(f"{slug}: no defaults of its own (its instances take those of their size and the installation)")
    for key, value in data["policy"].items():
        out.print(f"{key.replace('_', '-'):<16} {value}")
