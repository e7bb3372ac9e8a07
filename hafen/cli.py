"""The command line: thin commands over the service layer, one clear line on error."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from hafen.config import get_settings
from hafen.errors import HafenError, InvalidInput, OperationFailed

out = Console()
err = Console(stderr=True)


def _services() -> ModuleType:
    from hafen.django_setup import setup

    setup()
    from hafen.instances import services

    return services


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _wait(op: Any, quiet: bool) -> Any:
    """Wait for an operation with a progress display; raise if it failed."""
    svc = _services()
    title = f"{op.kind} {op.instance_name}"
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=err, transient=True, disable=quiet,
    ) as progress:
        task = progress.add_task(title, total=None)

        def update(current: Any) -> None:
            step = current.current_step()
            if not err.is_terminal and not quiet and step:
                err.print(f"{title}: {step['title']}", highlight=False, soft_wrap=True)
            done = sum(1 for s in current.steps if s["state"] == "done")
            text = f"{title}: {step['title']}" if step else title
            progress.update(task, description=text, total=len(current.steps) or None, completed=done)

        op = svc.wait(op, update)
    if op.state == "failed":
        raise OperationFailed(f"{op.kind} of {op.instance_name} failed: {op.error}")
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
def cli() -> None:
    """hafen runs many isolated instances of a web app on Docker Swarm."""


# -- control plane -----------------------------------------------------------------------------------


def _build_progress(quiet: bool = False) -> tuple[Progress, Callable[[str, str], None]]:
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                        disable=quiet)
    tasks: dict[str, Any] = {}

    def report(tag: str, text: str) -> None:
        if not err.is_terminal and not quiet:
            err.print(f"{tag}: {text}", highlight=False, soft_wrap=True)  # a log, where no live display shows
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

    settings = get_settings()
    engine = get_engine()
    engine.ping()
    if engine.ensure_swarm(settings.advertise_addr):
        err.print(f"swarm mode turned on (advertise address {settings.advertise_addr})")
    _services()
    if settings.engine == "swarm":
        progress, report = _build_progress()
        with progress:
            built = build_all(Builder.from_env(), report, only_stale=True)
        if built:
            err.print(f"built {len(built)} images")
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

    _services()
    process.serve(get_settings())


@cli.command()
def down() -> None:
    """Stop the control plane; instances keep running."""
    from hafen.controller import process

    pid = process.stop(get_settings())
    err.print("the control plane was not running" if pid is None else f"control plane stopped (pid {pid})")


# -- instances ---------------------------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.option("--app", required=True, help="App from the catalogue, e.g. openslides or demo.")
@click.option("--version", "version", default=None, help="App version (default: the app's default).")
@click.option("--domain", default=None, help="Domain (default: NAME.localhost).")
@click.option("--size", default="small", show_default=True, help="small, medium or large.")
@click.option("--owner", default="", help="Customer that owns the instance.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def create(name: str, app: str, version: str | None, domain: str | None, size: str, owner: str,
           as_json: bool) -> None:
    """Create an instance and wait until it runs."""
    svc = _services()
    op = svc.create_instance(name, app, version=version, domain=domain, size=size, owner=owner)
    _wait(op, quiet=as_json)
    instance = svc.get_instance(name)
    creds = svc.credentials(name)
    data = {**svc.describe(instance), "username": creds.username, "password": creds.password}
    if as_json:
        _emit(data)
        return
    out.print(f"[bold green]{name}[/] is running")
    out.print(f"  URL       {data['url']}")
    out.print(f"  username  {creds.username}")
    out.print(f"  password  {creds.password}")


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """List instances."""
    svc = _services()
    rows = [svc.describe(i) for i in svc.list_instances()]
    if as_json:
        _emit(rows)
        return
    table = Table("NAME", "APP", "VERSION", "STATE", "REPLICAS", "URL", box=None)
    for row in rows:
        replicas = f"{row['replicas']['running']}/{row['replicas']['desired']}"
        table.add_row(row["name"], row["app"], row["version"], row["state"], replicas, row["url"])
    out.print(table if rows else "no instances")


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show(name: str, as_json: bool) -> None:
    """Show an instance, its services and recent operations."""
    svc = _services()
    data = svc.describe(svc.get_instance(name))
    data["operations"] = [
        {"kind": o.kind, "state": o.state, "created_at": o.created_at, "error": o.error}
        for o in svc.operations(name, limit=5)
    ]
    if as_json:
        _emit(data)
        return
    for key in ("name", "app", "version", "domain", "url", "size", "owner", "state", "created_at"):
        out.print(f"{key:<11} {data[key]}")
    out.print(f"{'replicas':<11} {data['replicas']['running']}/{data['replicas']['desired']}")
    if data["error"]:
        out.print(f"{'error':<11} [red]{data['error']}[/]")
    table = Table("SERVICE", "STATE", "RUNNING", "ERROR", box=None)
    for service, state in data["services"].items():
        table.add_row(service, state["state"], f"{state['running']}/{state['replicas']}", state["error"])
    out.print(table)
    for op in data["operations"]:
        out.print(f"  {op['created_at']:%Y-%m-%d %H:%M:%S}  {op['kind']:<8} {op['state']}  {op['error']}")


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def credentials(name: str, as_json: bool) -> None:
    """Print the admin user name and password of an instance."""
    creds = _services().credentials(name)
    if as_json:
        _emit({"username": creds.username, "password": creds.password})
    else:
        out.print(f"username  {creds.username}\npassword  {creds.password}")


def _simple(action: str, help_text: str) -> None:
    @cli.command(name=action, help=help_text)
    @click.argument("name")
    def command(name: str) -> None:
        svc = _services()
        _wait(getattr(svc, action)(name), quiet=False)
        out.print(f"{name}: {svc.get_instance(name).state}")


_simple("start", "Start an instance (also brings back a deleted one, with its data).")
_simple("stop", "Stop an instance; its data stays.")
_simple("restart", "Restart the web service of an instance, one replica at a time.")
_simple("delete", "Remove an instance's services but keep its data; `start` brings it back.")


@cli.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Confirm that all data of the instance goes.")
def erase(name: str, yes: bool) -> None:
    """Remove an instance with all its data: volumes, secrets, network."""
    if not yes:
        raise InvalidInput(f"erase removes all data of {name} for good; add --yes to confirm")
    svc = _services()
    _wait(svc.erase(name), quiet=False)
    out.print(f"{name}: erased")


@cli.command()
@click.argument("name")
@click.argument("replicas", type=int)
def scale(name: str, replicas: int) -> None:
    """Set the number of replicas of the web service."""
    svc = _services()
    _wait(svc.scale(name, replicas), quiet=False)
    out.print(f"{name}: {replicas} replicas")


@cli.command()
@click.argument("name")
def passwd(name: str) -> None:
    """Set a new generated admin password and print it once."""
    svc = _services()
    op, password = svc.new_admin_password(name)
    _wait(op, quiet=False)
    out.print(f"new admin password of {name}: {password}")


@cli.command()
@click.argument("name")
@click.option("--service", "-s", default=None, help="Service (default: the web service).")
@click.option("--follow", "-f", is_flag=True)
@click.option("--since", default=None, help="A duration such as 10m, or a time.")
@click.option("--tail", type=int, default=None, help="Only the last N lines.")
def logs(name: str, service: str | None, follow: bool, since: str | None, tail: int | None) -> None:
    """Print the logs of a service of an instance."""
    svc = _services()
    for line in svc.logs(name, service, follow=follow, since=_since(since), tail=tail):
        click.echo(line)


# -- images ------------------------------------------------------------------------------------------


@cli.group()
def images() -> None:
    """Build the images hafen runs."""


@images.command()
@click.option("--ca-bundle", type=click.Path(path_type=Path), default=None, envvar="SSL_CERT_FILE",
              help="CA bundle the build trusts for PyPI (default: $SSL_CERT_FILE).")
@click.option("--index-url", default=None, envvar="PIP_INDEX_URL", help="Python package index for builds.")
@click.option("--stale", is_flag=True, help="Only images whose build files changed or that are missing.")
def build(ca_bundle: Path | None, index_url: str | None, stale: bool) -> None:
    """Build every image: base, PostgreSQL, Redis, edge proxy and the apps."""
    from hafen.images.build import Builder, build_all

    progress, report = _build_progress()
    with progress:
        built = build_all(Builder(ca_bundle, index_url), report, only_stale=stale)
    err.print(f"{len(built)} images built" if built else "all images are up to date")


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
