"""The command line: thin commands over the service layer, one clear line on error."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from hafen.backends import Backend
from hafen.config import get_settings
from hafen.errors import Conflict, HafenError, InvalidInput, OperationFailed, StillRunning

DEFAULT_TIMEOUT = 900.0


def console(**options: Any) -> Console:
    """Markup, emoji codes and highlighting off: every string is printed as the plain text it is, whatever a
    user or an app wrote in it (a reason, an error, a user name like "[/]"); hafen's own styling is `Text`."""
    return Console(markup=False, emoji=False, highlight=False, **options)


out = console()
err = console(stderr=True)


def _django() -> None:
    from hafen.django_setup import setup

    setup()


def _backend() -> Backend:
    """The remote control plane named by --url/HAFEN_URL, else this host's."""
    options = click.get_current_context().find_root().params
    if options.get("url"):
        from hafen.backends.remote import RemoteBackend

        return RemoteBackend(options["url"], options.get("token") or "")
    _django()
    from hafen.backends.local import LocalBackend

    return LocalBackend()


def _local_only() -> None:
    if click.get_current_context().find_root().params.get("url"):
        raise InvalidInput("this command works only on the control plane's host, without --url")


def _table(*headers: str) -> Table:
    """A table that folds long cells rather than cutting them: a message or error is shown whole."""
    table = Table(box=None)
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _timeout(command: Callable[..., None]) -> Callable[..., None]:
    """The --timeout option of a command that waits for its operation."""
    return click.option(
        "--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT, show_default=True,
        metavar="SECONDS", help="How long to wait for the operation; past it, it goes on (exit 10).",
    )(command)


def _wait(backend: Backend, op: dict[str, Any], quiet: bool, timeout: float) -> dict[str, Any]:
    """Wait for an operation with a progress display; raise if it failed (StillRunning past the timeout)."""
    title = f"{op['kind']} {op['instance']}"
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
        TextColumn("{task.completed}/{task.total}", markup=False),
        TimeElapsedColumn(), console=err, transient=True, disable=quiet,
    ) as progress:
        task = progress.add_task(title, total=None)

        def update(current: dict[str, Any]) -> None:
            step = next((s for s in current["steps"] if s["state"] != "done"), None)
            if not err.is_terminal and not quiet and step:
                err.print(f"{title}: {step['title']}", soft_wrap=True)
            done = sum(1 for s in current["steps"] if s["state"] == "done")
            text = f"{title}: {step['title']}" if step else title
            if step and step.get("detail"):
                text += f" ({step['detail']})"
            progress.update(task, description=text, total=len(current["steps"]) or None, completed=done)

        op = backend.wait(op, update, timeout=timeout)
    if op["state"] == "failed":
        raise OperationFailed(f"{op['kind']} of {op['instance']} failed: {op['error']}")
    if op["state"] == "superseded":
        raise Conflict(f"{op['kind']} of {op['instance']} did not finish: {op['error']}")
    if op["state"] == "rolled back":
        raise OperationFailed(f"{op['kind']} of {op['instance']} rolled back: {op['error']}")
    return op


def _since(value: str | None) -> int | None:
    if not value:
        return None
    match = re.fullmatch(r"(\d+)([smhd])", value)
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return int(time.time()) - seconds
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        raise InvalidInput("--since takes a duration like 10m or 2h, or a time like 2026-11-22T10:00") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hafen")
@click.option("--url", envvar="HAFEN_URL", default=None, metavar="URL",
              help="A remote control plane, e.g. https://hafen.example.com (default: this host's).")
@click.option("--token", envvar="HAFEN_TOKEN", default=None, help="API token for --url.")
def cli(url: str | None, token: str | None) -> None:
    """hafen runs many isolated instances of a web app on Docker Swarm."""


# -- control plane -----------------------------------------------------------------------------------


def _build_progress(quiet: bool = False) -> tuple[Progress, Callable[[str, str], None]]:
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn(),
                        console=err, disable=quiet)
    tasks: dict[str, Any] = {}

    def report(tag: str, text: str) -> None:
        if not err.is_terminal and not quiet:
            err.print(f"{tag}: {text}", soft_wrap=True)  # a log, where no live display shows
            return
        if tag not in tasks:
            tasks[tag] = progress.add_task(tag)
        progress.update(tasks[tag], description=f"{tag}: {text}")
        if text == "done":
            progress.stop_task(tasks[tag])

    return progress, report


@cli.command()
@click.option("--detach", is_flag=True, help="Return once the control plane is ready.")
def up(detach: bool) -> None:
    """Set up what is missing and run the control plane."""
    from hafen.controller import process
    from hafen.engine import get_engine
    from hafen.images.build import Builder, build_all

    _local_only()
    settings = get_settings()
    from hafen.mail.relay import check_settings

    check_settings(settings.smtp_url, settings.mail_from, settings.mail_rate)  # before anything starts
    engine = get_engine()
    engine.ping()
    if engine.ensure_swarm(settings.advertise_addr):
        err.print(f"swarm mode turned on (advertise address {settings.advertise_addr})")
    _django()
    _first_operator()
    if settings.engine == "swarm":
        progress, report = _build_progress()
        with progress:
            built = build_all(Builder.from_env(), report, only_stale=True)
        if built:
            err.print(f"built {len(built)} images")
        if settings.registry_port:
            try:
                _push_images(wait=60.0)
            except HafenError as exc:  # one node runs without it; the controller tries again every 30 s
                err.print(f"warning: {exc}; services name images by tag until it answers")
    err.print(f"database: {settings.database_display}")
    pid = process.running_pid(settings)
    if pid is not None:
        err.print(f"the control plane runs already (pid {pid})")
        return
    if detach:
        with err.status("starting the control plane"):
            pid = process.detach(settings)
        err.print(f"control plane running (pid {pid}); web on http://{settings.web_host}:{settings.web_port}/; "
                  f"log {settings.log_path}")
        return
    err.print(f"control plane running; web on http://{settings.web_host}:{settings.web_port}/; Ctrl-C stops it")
    process.serve(settings)


@cli.command(hidden=True)
def serve() -> None:
    """Run the control plane in the foreground (what `up` starts)."""
    from hafen.controller import process

    _django()
    process.serve(get_settings())


@cli.command()
def down() -> None:
    """Stop the control plane; instances keep running."""
    from hafen.controller import process

    _local_only()
    pid = process.stop(get_settings())
    err.print("the control plane was not running" if pid is None else f"control plane stopped (pid {pid})")


# -- instances ---------------------------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.option("--app", required=True, help="App from the catalogue, e.g. openslides or demo.")
@click.option("--version", "version", default=None, help="App version (default: the app's default).")
@click.option("--domain", default=None, help="Domain (default: NAME.localhost).")
@click.option("--size", default="small", show_default=True, help="small, medium or large.")
@click.option("--org", "organisation", default=None, help="Organisation that owns the instance.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_timeout
def create(name: str, app: str, version: str | None, domain: str | None, size: str, organisation: str | None,
           as_json: bool, timeout: float) -> None:
    """Create an instance and wait until it runs."""
    backend = _backend()
    _wait(backend, backend.create(name, app, version, domain, size, organisation), quiet=as_json, timeout=timeout)
    data = {**backend.show(name), **backend.credentials(name)}
    if as_json:
        _emit(data)
        return
    out.print(Text.assemble((name, "bold green"), " is running"))
    out.print(f"  URL       {data['url']}")
    out.print(f"  username  {data['username']}")
    out.print(f"  password  {data['password']}")


@cli.command(name="list")
@click.option("--search", "-q", "q", default="", help="Part of a name or domain.")
@click.option("--state", default="", help="Only instances in this state.")
@click.option("--app", default="", help="Only instances of this app.")
@click.option("--org", "organisation", default="", help="Only instances of this organisation.")
@click.option("--json", "as_json", is_flag=True)
def list_(q: str, state: str, app: str, organisation: str, as_json: bool) -> None:
    """List instances."""
    rows = _backend().instances(q=q, state=state, app=app, organisation=organisation)
    if as_json:
        _emit(rows)
        return
    table = _table("NAME", "APP", "VERSION", "STATE", "REPLICAS", "ORGANISATION", "NODE", "URL",
                   "LAST VERIFIED BACKUP")
    for row in rows:
        replicas = f"{row['replicas']['running']}/{row['replicas']['desired']}"
        table.add_row(row["name"], row["app"], _version_cell(row), row["state"], replicas,
                      row["organisation"] or "-", row.get("node") or "-", row["url"],
                      _backup_cell(row.get("backups") or {}))
    out.print(table if rows else "no instances")


def _version_cell(row: dict[str, Any]) -> Text:
    """The version it runs, and what it can be updated to."""
    offer = row.get("update") or {}
    text = Text(row["version"])
    if offer.get("versions"):
        text.append(f" ({offer['versions'][-1]} available)", "yellow")
    elif offer.get("rebuilt"):
        text.append(" (new build available)", "yellow")
    return text


def _backup_cell(backups: dict[str, Any]) -> Text:
    verified = backups.get("last_verified")
    text = Text(verified[:16].replace("T", " ") if verified else "none")
    if backups.get("problems"):
        text.append(" (!) " + "; ".join(backups["problems"]), "red")
    return text


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show(name: str, as_json: bool) -> None:
    """Show an instance, its services, locks and recent operations."""
    data = _backend().show(name)
    if as_json:
        _emit(data)
        return
    for key in ("name", "app", "version", "domain", "url", "size", "organisation", "state", "node", "created_at"):
        out.print(f"{key:<13} {data[key] or '-'}" if key != "version" else Text(f"{key:<13} ") + _version_cell(data))
    out.print(f"{'replicas':<13} {data['replicas']['running']}/{data['replicas']['desired']}")
    # Lines that carry what someone wrote are soft-wrapped: the terminal wraps them, no newline is added.
    if data["error"]:
        out.print(Text.assemble(f"{'error':<13} ", (data["error"], "red")), soft_wrap=True)
    for lock in data["locks"]:
        out.print(f"{'lock ' + str(lock['id']):<13} {', '.join(lock['actions'])}: {lock['reason']} "
                  f"({lock['created_by']})", soft_wrap=True)
    _show_backups(data.get("backups"))
    hafen.cli_elastic.show_elastic(data.get("elastic"))
    table = _table("SERVICE", "STATE", "RUNNING", "ERROR")
    for service, state in data["services"].items():
        table.add_row(service, state["state"], f"{state['running']}/{state['replicas']}", state["error"])
    out.print(table)
    for op in data["operations"][:5]:
        out.print(f"  {op['created_at'][:19].replace('T', ' ')}  {op['kind']:<8} {op['state']}  {op['error']}",
                  soft_wrap=True)


def _show_backups(backups: dict[str, Any] | None) -> None:
    if not backups:
        return
    last, verified = backups["last_backup"], backups["last_verified"]
    last_text = f"{last[:16].replace('T', ' ')} {backups['last_backup_status']}" if last else "none"
    verified_text = f"{verified[:16].replace('T', ' ')} ({backups['last_verified_id']})" if verified else "none"
    out.print(f"{'last backup':<13} {last_text}")
    out.print(f"{'verified':<13} {verified_text}")
    policy = backups.get("policy") or {}
    if policy:
        out.print(f"{'backups':<13} {policy['schedule'] if policy['enabled'] else 'off'} (policy of the "
                  f"{policy['set_for']}) to {backups['repository']}", soft_wrap=True)
    for problem in backups["problems"]:
        out.print(Text.assemble(f"{'backup':<13} ", (problem, "red")), soft_wrap=True)


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def credentials(name: str, as_json: bool) -> None:
    """Print the admin user name and password of an instance (written to the audit log)."""
    creds = _backend().credentials(name)
    if as_json:
        _emit(creds)
    else:
        out.print(f"username  {creds['username']}\npassword  {creds['password']}")


def _simple(action: str, help_text: str) -> None:
    @cli.command(name=action, help=help_text)
    @click.argument("name")
    @_timeout
    def command(name: str, timeout: float) -> None:
        backend = _backend()
        _wait(backend, backend.act(action, name), quiet=False, timeout=timeout)
        out.print(f"{name}: {backend.show(name)['state']}")


_simple("start", "Start an instance (also brings back a deleted one, with its data).")
_simple("stop", "Stop an instance; its data stays.")
_simple("restart", "Restart the web service of an instance, one replica at a time.")
_simple("delete", "Remove an instance's services but keep its data; `start` brings it back.")


@cli.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Confirm that all data of the instance goes.")
@_timeout
def erase(name: str, yes: bool, timeout: float) -> None:
    """Remove an instance with all its data: volumes, secrets, network."""
    if not yes:
        raise InvalidInput(f"erase removes all data of {name} for good; add --yes to confirm")
    backend = _backend()
    _wait(backend, backend.erase(name), quiet=False, timeout=timeout)
    out.print(f"{name}: erased")


@cli.command()
@click.argument("name")
@click.argument("replicas", type=int)
@_timeout
def scale(name: str, replicas: int, timeout: float) -> None:
    """Set the number of replicas of the web service."""
    backend = _backend()
    _wait(backend, backend.scale(name, replicas), quiet=False, timeout=timeout)
    out.print(f"{name}: {replicas} replicas")


@cli.command()
@click.argument("name", required=False)
@click.option("--app", default=None, metavar="APP",
              help="Instead of NAME: a rollout over every instance of APP you may update (with --version).")
@click.option("--version", "version", default=None, metavar="V",
              help="The app version to go to (default: the newest; the same version: its newest build).")
@click.option("--restore", default=None, metavar="SNAPSHOT",
              help="Going back to an older version: a backup taken on it, whose data replaces the current data.")
@click.option("--org", "organisation", default=None, metavar="ORG", help="With --app: only ORG's instances.")
@click.option("--canary", type=int, default=None, metavar="N",
              help="With --app: update N instances first, alone; the rest wait for them (default 1).")
@click.option("--canary-instance", "canaries", multiple=True, metavar="NAME",
              help="With --app: take NAME as a canary (repeat for more).")
@click.option("--batch", type=int, default=None, metavar="N",
              help="With --app: after the canaries, update N instances at once (default 1).")
@click.option("--at", default=None, metavar="TIME",
              help="With --app: start at TIME, e.g. 2026-12-01T02:00 (UTC) or 2026-12-01T02:00+01:00 (default: now).")
@click.option("--detach", is_flag=True, help="Queue the update (or the rollout) and return at once.")
@click.option("--json", "as_json", is_flag=True)
@_timeout
def update(name: str | None, app: str | None, version: str | None, restore: str | None, organisation: str | None,
           canary: int | None, canaries: tuple[str, ...], batch: int | None, at: str | None, detach: bool,
           as_json: bool, timeout: float) -> None:
    """Update NAME to another version of its app, or to a newer build of the version it runs; or, with --app
    instead of NAME, every instance of the app (a rollout).

    A new version: a backup, the "updating" page, the migration once, the new version checked, then traffic;
    if any of it fails, the backup is restored and the old version runs again (the update ends "rolled
    back"). A newer build of the same version rolls over without downtime.

    A rollout updates its canaries first, then batches, each instance inside its organisation's update
    window (`hafen org window`); the first update that fails ends it, and no further instance is touched.
    It is followed until it ends (--timeout only when given); `hafen rollout` pauses, resumes or cancels it.
    """
    if (name is None) == (app is None):
        raise InvalidInput("give NAME (one instance) or --app APP (a rollout over its instances), not both" if name
                           else "give NAME (one instance) or --app APP (a rollout over its instances)")
    if app is not None:
        if restore:
            raise InvalidInput("--restore goes with NAME (one instance), not with --app")
        from hafen.cli_rollouts import start

        explicit = click.get_current_context().get_parameter_source("timeout") != ParameterSource.DEFAULT
        start(app, version, organisation, canary, canaries, batch, at, detach, as_json, timeout if explicit else None)
        return
    given = [option for option, value in (("--org", organisation), ("--canary", canary),
                                          ("--canary-instance", canaries), ("--batch", batch), ("--at", at))
             if value is not None and value != ()]
    if given:
        raise InvalidInput(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --app (a rollout), "
                           "not with NAME")
    assert name is not None
    backend = _backend()
    op = backend.update(name, version, restore)
    if detach:
        _emit(op) if as_json else out.print(f"{name}: update {op['id']} queued")
        return
    op = _wait(backend, op, quiet=as_json, timeout=timeout)
    if as_json:
        _emit(op)
        return
    plan = op.get("update") or {}
    out.print(f"{name}: updated from {plan.get('from_version')} to {plan.get('to_version')} ({plan.get('plan')})")


@cli.command()
@click.argument("name")
@_timeout
def passwd(name: str, timeout: float) -> None:
    """Set a new generated admin password and print it once."""
    backend = _backend()
    op, password = backend.passwd(name)
    try:
        _wait(backend, op, quiet=False, timeout=timeout)
    except StillRunning:
        out.print(f"new admin password of {name}, once the operation has finished: {password}")
        raise
    out.print(f"new admin password of {name}: {password}")


@cli.command()
@click.argument("name")
@click.option("--action", "-a", "actions", multiple=True, required=True,
              help="An action to refuse: erase, delete, update, stop or scale (repeat for more).")
@click.option("--reason", required=True, help="Why; shown to whoever is refused.")
def lock(name: str, actions: tuple[str, ...], reason: str) -> None:
    """Lock an instance against chosen actions."""
    found = _backend().lock(name, list(actions), reason)
    out.print(f"{name}: lock {found['id']} refuses {', '.join(found['actions'])}")


@cli.command()
@click.argument("name")
@click.argument("lock_id", type=int)
def unlock(name: str, lock_id: int) -> None:
    """Lift a lock (see `hafen show NAME` for its id)."""
    _backend().unlock(name, lock_id)
    out.print(f"{name}: lock {lock_id} lifted")


@cli.command(name="audit")
@click.option("--instance", default="", help="Only entries about this instance.")
@click.option("--action", default="", help="Only this action, e.g. erase or credentials.")
@click.option("--actor", "actor_name", default="", help="Only entries by this user.")
@click.option("--json", "as_json", is_flag=True)
def audit_(instance: str, action: str, actor_name: str, as_json: bool) -> None:
    """The latest 100 entries of the audit log, newest first."""
    rows = _backend().audit(instance=instance, action=action, actor_name=actor_name)
    if as_json:
        _emit(rows)
        return
    table = _table("WHEN", "WHO", "VIA", "FROM", "ACTION", "INSTANCE", "RESULT", "MESSAGE")
    for row in rows:
        table.add_row(str(row["at"])[:19].replace("T", " "), row["actor"], row["via"], row["source"], row["action"],
                      row["instance"], row["result"], row["message"])
    out.print(table if rows else "no entries")


# -- organisations and users (on the control plane's host) ---------------------------------------------


def _first_operator() -> None:
    """On the first start, an operator account for the web UI, its password shown this once."""
    from hafen.access import services as access

    if not access.has_operator():
        password = access.ensure_operator("admin")
        err.print(Text.assemble("web UI operator created: user ", ("admin", "bold"), ", password ",
                                (password or "", "bold"), " (shown once; `hafen user passwd admin` sets a new one)"))


@cli.group()
def org() -> None:
    """Organisations (customers) and their members."""


@org.command(name="create")
@click.argument("slug")
@click.option("--name", default="", help="Display name (default: SLUG).")
def org_create(slug: str, name: str) -> None:
    """Create an organisation."""
    _local_only()
    _django()
    from hafen.access import services as access
    from hafen.access.policy import Actor

    access.create_organisation(Actor.local(), slug, name)
    out.print(f"organisation {slug} created")


@org.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def org_list(as_json: bool) -> None:
    """Organisations with their members, instances and the node labels their new instances ask for."""
    _local_only()
    _django()
    from hafen.access import services as access
    from hafen.access.policy import Actor
    from hafen.instances import organisations as described

    organisations = access.organisations_with_counts(Actor.local())
    if as_json:
        _emit([described.describe(o) for o in organisations])
        return
    table = _table("SLUG", "NAME", "MEMBERS", "INSTANCES", "NODE LABELS", "UPDATE WINDOW")
    for o in organisations:
        labels = ", ".join(f"{k}={v}" for k, v in sorted((o.node_labels or {}).items()))
        table.add_row(o.slug, o.name, str(o.member_count), str(o.instance_count), labels or "any node",
                      _window_text(o.update_window, o.update_window_minutes))
    out.print(table if organisations else "no organisations")


def _window_text(cron: str, minutes: int) -> str:
    return f"{cron} (UTC), {minutes} min" if cron else "any time"


@org.command(name="window")
@click.argument("slug")
@click.option("--cron", default=None, metavar="CRON",
              help='When the window opens, a cron expression in UTC, e.g. "0 2 * * 6" (Saturdays at 02:00).')
@click.option("--minutes", type=int, default=0, metavar="N", help="How long it stays open (1 minute to 7 days).")
@click.option("--none", "clear", is_flag=True, help="No window: rollouts update the instances at any time.")
@click.option("--json", "as_json", is_flag=True)
def org_window(slug: str, cron: str | None, minutes: int, clear: bool, as_json: bool) -> None:
    """Set when rollouts may update the organisation's instances (operators and its admins)."""
    if clear == (cron is not None):
        raise InvalidInput("give --cron CRON --minutes N, or --none, not both" if clear
                           else "give --cron CRON --minutes N (a window), or --none (at any time)")
    if clear and minutes:
        raise InvalidInput("--minutes goes with --cron, not with --none")
    data = _backend().org_window(slug, "" if clear else cron or "", minutes)
    if as_json:
        _emit(data)
        return
    window = data.get("update_window")
    if not window:
        out.print(f"{data['slug']}: rollouts update its instances at any time")
        return
    out.print(f"{data['slug']}: update window {_window_text(window['cron'], window['minutes'])}; "
              f"{'open now' if window['open'] else 'opens next ' + window['next'][:16].replace('T', ' ') + ' UTC'}",
              soft_wrap=True)


@org.command(name="webhook")
@click.argument("slug")
@click.argument("url", required=False)
@click.option("--off", is_flag=True, help="No webhook: the alerts reach the organisation by mail only.")
def org_webhook(slug: str, url: str | None, off: bool) -> None:
    """Post the alerts about the organisation's instances to URL too (operators and its admins)."""
    if off == (url is not None):
        raise InvalidInput("give a URL, or --off, not both" if off else "give the webhook's URL, or --off")
    data = _backend().org_webhook(slug, "" if off else url or "")
    shown = data.get("alert_webhook") or "none"
    out.print(f"{data['slug']}: alert webhook {shown}", soft_wrap=True)


@org.command(name="label")
@click.argument("slug")
@click.argument("changes", nargs=-1, required=True, metavar="KEY=VALUE|KEY-...")
def org_label(slug: str, changes: tuple[str, ...]) -> None:
    """Set (KEY=VALUE) or remove (KEY-) the labels a node must carry to take the organisation's new instances."""
    _local_only()
    _django()
    from hafen.access import services as access
    from hafen.access.policy import Actor

    organisation = access.set_node_labels(Actor.local(), slug, list(changes))
    labels = ", ".join(f"{k}={v}" for k, v in sorted(organisation.node_labels.items()))
    out.print(f"{slug}: node labels {labels or 'none (any node)'}")


@org.command(name="add-member")
@click.argument("slug")
@click.argument("username")
@click.option("--role", default="member", show_default=True, help="admin or member.")
@click.option("--credentials", "can_read_credentials", is_flag=True, help="A member may read credentials.")
@click.option("--email", default="")
def org_add_member(slug: str, username: str, role: str, can_read_credentials: bool, email: str) -> None:
    """Add a person to an organisation; a new account's password is printed once."""
    _local_only()
    _django()
    from hafen.access import services as access
    from hafen.access.policy import Actor

    new = access.add_member(Actor.local(), slug, username, role, can_read_credentials, email)
    out.print(f"{username} is {role} of {slug}")
    if new.password:
        out.print(f"password  {new.password}")


@cli.group()
def user() -> None:
    """Web UI accounts."""


@user.command(name="add-operator")
@click.argument("username")
def user_add_operator(username: str) -> None:
    """Create an operator account and print its password once (customers: `hafen org add-member`)."""
    _local_only()
    _django()
    from hafen.access import services as access

    password = access.ensure_operator(username)
    out.print(f"{username} is an operator" + (f"\npassword  {password}" if password else ""))


@user.command(name="token")
@click.argument("username")
@click.option("--name", required=True, help="What the token is for, e.g. ci.")
@click.option("--scope", type=click.Choice(["read", "write"]), default="read", show_default=True)
def user_token(username: str, name: str, scope: str) -> None:
    """Create an API token for a user and print it once (for `--url`/`--token` or scripts)."""
    _local_only()
    _django()
    from hafen.access import services as access

    out.print(access.create_token_for(username, name, scope))


@user.command(name="passwd")
@click.argument("username")
def user_passwd(username: str) -> None:
    """Set a new generated password for a web UI account and print it once."""
    _local_only()
    _django()
    from hafen.access import services as access

    out.print(f"new password of {username}: {access.set_password(username)}")


# -- images ------------------------------------------------------------------------------------------


@cli.group()
def images() -> None:
    """Build the images hafen runs, and push them into the installation's registry."""


@images.command()
@click.option("--ca-bundle", type=click.Path(path_type=Path), default=None, envvar="SSL_CERT_FILE",
              help="CA bundle the build trusts for PyPI (default: $SSL_CERT_FILE).")
@click.option("--index-url", default=None, envvar="PIP_INDEX_URL", help="Python package index for builds.")
@click.option("--stale", is_flag=True, help="Only images whose build files changed or that are missing.")
def build(ca_bundle: Path | None, index_url: str | None, stale: bool) -> None:
    """Build every image: base, PostgreSQL, Redis, edge proxy and the apps."""
    from hafen.images.build import Builder, build_all

    _local_only()
    progress, report = _build_progress()
    with progress:
        built = build_all(Builder(ca_bundle, index_url), report, only_stale=stale)
    err.print(f"{len(built)} images built" if built else "all images are up to date")


def _push_images(wait: float) -> None:
    """Start the installation's registry if it is not running, wait for it, push what it lacks."""
    from hafen.controller import registry
    from hafen.engine import get_engine
    from hafen.images.registry import answers, push_missing

    settings = get_settings()
    if not settings.registry_port:
        raise InvalidInput("no registry: HAFEN_REGISTRY_PORT is 0")
    if not answers(settings.registry):
        engine = get_engine()
        with err.status(f"starting the image registry on port {settings.registry_port}"):
            registry.ensure(engine, settings, engine.observe(settings.prefix))
            deadline = time.monotonic() + wait
            while not answers(settings.registry):
                if time.monotonic() > deadline:
                    raise HafenError(f"the image registry {settings.registry} did not answer within {wait:.0f} s; "
                                     f"see `docker service ps {settings.prefix}-registry`")
                time.sleep(1)
    progress, report = _build_progress()
    with progress:
        pushed = push_missing(settings.registry, report)
    if pushed:
        err.print(f"pushed {len(pushed)} images into the registry {settings.registry}")


@images.command()
def push() -> None:
    """Push the images hafen deploys into the installation's registry (the control plane does it too)."""
    _local_only()
    _push_images(wait=60.0)


import hafen.cli_alerts  # noqa: E402  (registers `hafen alerts` on `cli`)
import hafen.cli_backups  # noqa: E402  (registers the backup commands on `cli`)
import hafen.cli_elastic  # noqa: E402  (registers `hafen policy` on `cli`)
import hafen.cli_logs  # noqa: E402  (registers `hafen logs` and `hafen errors` on `cli`)
import hafen.cli_mail  # noqa: E402  (registers `hafen mail` on `cli`)
import hafen.cli_nodes  # noqa: E402  (registers `hafen node` on `cli`)
import hafen.cli_rollouts  # noqa: E402  (registers `hafen rollout` on `cli`)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except HafenError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
