"""The command line of the apps' mail relay: hafen mail status, hafen mail test ADDRESS (operators)."""

from __future__ import annotations

import click

from hafen.cli import _backend, _emit, _table, cli, out


@cli.group()
def mail() -> None:
    """The mail relay the instances send through (operators)."""


@mail.command(name="status")
@click.option("--json", "as_json", is_flag=True)
def mail_status(as_json: bool) -> None:
    """The relay's state, the smarthost (never its password), the rate limit and each instance's sender."""
    data = _backend().mail_status()
    if as_json:
        _emit(data)
        return
    out.print(f"relay      {data['service']}: {data['state']}")
    out.print(f"smarthost  {data['smarthost'] or '(none)'}")
    out.print(f"mode       {data['mode']}")
    if data["problem"]:
        out.print(f"problem    {data['problem']}")
    out.print(f"senders    INSTANCE@{data['mail_domain']} (HAFEN_MAIL_FROM: {data['mail_from']})")
    out.print(f"limit      {data['rate_words']} per instance ({data['rate']})")
    if data["instances"]:
        table = _table("INSTANCE", "SENDER", "NETWORK")
        for item in data["instances"]:
            table.add_row(item["name"], item["sender"], item["network"])
        out.print(table)


@mail.command(name="test")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True)
def mail_test(address: str, as_json: bool) -> None:
    """Send a test mail through the relay to ADDRESS (from HAFEN_MAIL_FROM)."""
    data = _backend().mail_test(address)
    if as_json:
        _emit(data)
        return
    out.print(f"queued at {data['relay']}: a test mail from {data['sender']} to {data['to']}")
