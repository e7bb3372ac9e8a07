"""The command line of elastic capacity: `hafen policy NAME [--idle D|never|default] [--deep-sleep ...]`,
and what `hafen show` says of sleep."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from hafen.cli import _backend, _emit, cli, out

DURATION = "a duration (20s, 30m, 24h), never, or default"


def show_elastic(data: dict[str, Any] | None, decisions: int = 3) -> None:
    """The lines of `hafen show` and `hafen policy`: policy, sleep, last request, latest decisions."""
    if not data:
        return
    policy = data["policy"]
    out.print(f"{'sleeps after':<13} {policy['idle']['value']} ({policy['idle']['source']}), deep sleep after "
              f"{policy['deep_sleep']['value']} ({policy['deep_sleep']['source']})")
    if data["sleep"]:
        out.print(f"{'asleep':<13} {data['sleep']} since {(data['slept_at'] or '-')[:19].replace('T', ' ')}")
    last = data["last_request_at"]
    out.print(f"{'last request':<13} {last[:19].replace('T', ' ') if last else 'none seen'}")
    for decision in data["decisions"][:decisions]:
        out.print(Text.assemble(f"{'decided':<13} {decision['at'][:19].replace('T', ' ')}  ",
                                (f"{decision['action']:<10}", "bold"), f" {decision['reason']}"), soft_wrap=True)


@cli.command()
@click.argument("name")
@click.option("--idle", help=f"Sleep after this long without a request: {DURATION}.")
@click.option("--deep-sleep", "deep_sleep", help=f"Stop the database and cache too after this long: {DURATION}.")
@click.option("--json", "as_json", is_flag=True)
def policy(name: str, idle: str | None, deep_sleep: str | None, as_json: bool) -> None:
    """Show or set when an instance sleeps (scaled to zero, woken by the first request)."""
    changes = {key: value for key, value in (("idle", idle), ("deep_sleep", deep_sleep)) if value is not None}
    data = _backend().policy(name, changes)
    if as_json:
        _emit(data)
        return
    show_elastic(data, decisions=10)
