"""The command line of backups: backup, backups, restore, clone, verify, backup-policy, repository."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from hafen.backup.fingerprint import human_bytes
from hafen.cli import _backend, _emit, _table, _timeout, _wait, cli, err, out
from hafen.errors import InvalidInput


def _size(value: int | None) -> str:
    return human_bytes(value) if value is not None else "-"


def _warn_on_host(repository: dict[str, Any] | None) -> None:
    if repository and not repository.get("off_host"):
        err.print(Text.assemble(("warning: ", "yellow"), f"backups go to {repository['repository']}"), soft_wrap=True)


@cli.command()
@click.argument("name")
@click.option("--wait/--no-wait", "wait", default=True, show_default=True,
              help="Wait until the backup is written (and show its progress).")
@click.option("--json", "as_json", is_flag=True)
@_timeout
def backup(name: str, wait: bool, as_json: bool, timeout: float) -> None:
    """Back up an instance now (a database dump and its files, encrypted, into the repository)."""
    backend = _backend()
    op = backend.backup(name)
    if not wait:
        _emit(op) if as_json else out.print(f"{name}: backup queued (operation {op['id']})")
        return
    _wait(backend, op, quiet=as_json, timeout=timeout)
    latest = next(iter(backend.backups(name)["items"]), None)
    if as_json:
        _emit(latest)
        return
    if latest is not None:
        out.print(f"{name}: backup {latest['id']} written, {_size(latest['size'])} ({_size(latest['added'])} new); "
                  "its verification is queued")


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def backups(name: str, as_json: bool) -> None:
    """List the backups of an instance (also of an erased one), newest first."""
    data = _backend().backups(name)
    if as_json:
        _emit(data)
        return
    _warn_on_host(data.get("repository"))
    table = _table("ID", "TIME", "SIZE", "ADDED", "VERSION", "REASON", "STATUS", "VERIFICATION")
    for item in data["items"]:
        verification = item["verification"]
        if item["verification_error"]:
            verification += f": {item['verification_error']}"
        status = item["status"] + (f": {item['error']}" if item["error"] else "")
        table.add_row(item["id"] or "-", item["created_at"][:19].replace("T", " "), _size(item["size"]),
                      _size(item["added"]), item["version"], item["reason"], status, verification)
    out.print(table if data["items"] else f"no backups of {name}")
    policy = data.get("policy")
    if policy:
        out.print(f"policy ({policy['set_for']}): {policy['schedule']}, keep {policy['keep_daily']} daily, "
                  f"{policy['keep_weekly']} weekly, {policy['keep_monthly']} monthly"
                  + (f"; next at {policy['next_backup'][:16].replace('T', ' ')}" if policy.get("next_backup")
                     else "; off"))


@cli.command()
@click.argument("name")
@click.argument("snapshot")
@click.option("--into", "into", default=None, metavar="NEW", help="Restore into a new instance of this name.")
@click.option("--domain", default=None, help="Domain of the new instance (with --into).")
@click.option("--org", "organisation", default=None, help="Organisation of the new instance (with --into).")
@click.option("--yes", is_flag=True, help="Do not ask for the instance's name (a restore in place).")
@click.option("--json", "as_json", is_flag=True)
@_timeout
def restore(name: str, snapshot: str, into: str | None, domain: str | None, organisation: str | None, yes: bool,
            as_json: bool, timeout: float) -> None:
    """Restore backup SNAPSHOT (its id, or `latest`) of NAME: in place, or into a new instance."""
    if not into and (domain or organisation):
        raise InvalidInput("--domain and --org go with --into NEW")
    if not into and not yes:
        typed = click.prompt(f"This replaces all data of {name} with backup {snapshot} (a safety backup is taken "
                             f"first). Type the instance's name to go on", default="", show_default=False)
        if typed != name:
            raise InvalidInput(f"the name typed was not {name}; nothing was changed")
    backend = _backend()
    op = backend.restore(name, snapshot, into=into, domain=domain, organisation=organisation)
    _wait(backend, op, quiet=as_json, timeout=timeout)
    if into:
        _print_new(backend, into, as_json, f"{into} is running with the data of {name}'s backup {snapshot}")
    elif as_json:
        _emit(backend.show(name))
    else:
        out.print(f"{name}: restored from backup {snapshot}")


def _print_new(backend: Any, name: str, as_json: bool, headline: str) -> None:
    data = {**backend.show(name), **backend.credentials(name)}
    if as_json:
        _emit(data)
        return
    out.print(Text(headline, "bold green"))
    out.print(f"  URL       {data['url']}")
    out.print(f"  username  {data['username']}")
    out.print(f"  password  {data['password']}")


@cli.command()
@click.argument("name")
@click.argument("new")
@click.option("--domain", default=None, help="Domain of the clone (default: NEW.localhost).")
@click.option("--org", "organisation", default=None, help="Organisation of the clone (default: NAME's).")
@click.option("--json", "as_json", is_flag=True)
@_timeout
def clone(name: str, new: str, domain: str | None, organisation: str | None, as_json: bool, timeout: float) -> None:
    """Back up NAME now and restore that backup into a new instance NEW."""
    backend = _backend()
    _wait(backend, backend.clone(name, new, domain, organisation), quiet=as_json, timeout=timeout)
    _print_new(backend, new, as_json, f"{new} is running, a clone of {name}")


@cli.command()
@click.argument("name")
@click.argument("snapshot", default="latest")
@_timeout
def verify(name: str, snapshot: str, timeout: float) -> None:
    """Restore a backup into a throwaway sandbox and check its data and login (default: the latest)."""
    backend = _backend()
    _wait(backend, backend.verify(name, snapshot), quiet=False, timeout=timeout)
    out.print(f"{name}: backup {snapshot} verified: restored in a sandbox, its data and the admin's login checked")


@cli.command(name="backup-policy")
@click.argument("name", required=False)
@click.option("--org", "organisation", default=None, help="The policy of an organisation's instances.")
@click.option("--schedule", default=None, metavar="CRON", help="When to back up, e.g. '0 2 * * *'.")
@click.option("--keep-daily", type=int, default=None)
@click.option("--keep-weekly", type=int, default=None)
@click.option("--keep-monthly", type=int, default=None)
@click.option("--enable/--disable", "enabled", default=None, help="Turn scheduled backups on or off.")
@click.option("--json", "as_json", is_flag=True)
def backup_policy(name: str | None, organisation: str | None, schedule: str | None, keep_daily: int | None,
                  keep_weekly: int | None, keep_monthly: int | None, enabled: bool | None, as_json: bool) -> None:
    """Show or set the backup policy of an instance, an organisation (--org), or the installation (neither)."""
    if name and organisation:
        raise InvalidInput("give an instance's name or --org, not both")
    changes = {k: v for k, v in {"schedule_expr": schedule, "keep_daily": keep_daily, "keep_weekly": keep_weekly,
                                 "keep_monthly": keep_monthly, "enabled": enabled}.items() if v is not None}
    policy = _backend().backup_policy(name, organisation, changes)
    if as_json:
        _emit(policy)
        return
    target = name or (f"organisation {organisation}" if organisation else "the installation")
    out.print(f"backup policy of {target} (set for the {policy['set_for']}): "
              f"{policy['schedule'] if policy['enabled'] else 'off'}, keep {policy['keep_daily']} daily, "
              f"{policy['keep_weekly']} weekly, {policy['keep_monthly']} monthly")


@cli.command()
@click.option("--check", is_flag=True, help="Run the repository's maintenance now: retention, prune, check.")
@click.option("--json", "as_json", is_flag=True)
def repository(check: bool, as_json: bool) -> None:
    """Where backups go, and the state of the repository's maintenance."""
    data = _backend().repository(check)
    if as_json:
        _emit(data)
        return
    _warn_on_host(data)
    out.print(f"repository    {data['repository']}")
    for key in ("last_check", "check_ok", "check_message", "last_prune", "maintenance_running", "error"):
        if key in data and data[key] not in (None, ""):
            out.print(f"{key.replace('_', ' '):<13} {data[key]}", soft_wrap=True)
    if check:
        out.print("maintenance requested: the controller runs it once no backup is running")
