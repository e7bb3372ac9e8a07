"""The command line of fleet rollouts: `hafen update --app` (its command is in hafen/cli.py) and
`hafen rollout list, show, pause, resume, cancel`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import click
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from hafen.backends import Backend
from hafen.cli import _backend, _emit, _table, cli, err, out
from hafen.errors import InvalidInput, OperationFailed, StillRunning

FINISHED = ("succeeded", "failed", "cancelled")
ITEM_FINISHED = ("updated", "rolled back", "failed", "skipped", "not touched")
POLL = 1.0  # seconds between two looks at a rollout being followed
STYLES = {"updated": "green", "succeeded": "green", "updating": "yellow", "running": "yellow", "paused": "yellow",
          "rolled back": "red", "failed": "red", "cancelled": "red", "skipped": "dim", "not touched": "dim"}


def parse_at(value: str | None) -> datetime | None:
    """--at: an ISO time with its zone, or without one, read as UTC."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"--at takes an ISO time such as 2026-12-01T02:00 (UTC) or 2026-12-01T02:00+01:00, "
                           f"not {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidInput(f"--at {value!r} is out of range") from None


def _when(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else "-"


def _counts(rollout: dict[str, Any]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(rollout["counts"].items())) or "no instances"


def _state(state: str) -> Text:
    return Text(state, STYLES.get(state, ""))


def _title(rollout: dict[str, Any]) -> str:
    return f"rollout {rollout['id']} of {rollout['app']} to {rollout['version']}"


def start(app: str, version: str | None, organisation: str | None, canary: int | None, canaries: tuple[str, ...],
          batch: int | None, at: str | None, detach: bool, as_json: bool, timeout: float | None) -> None:
    """`hafen update --app APP ...`: plan a rollout, then follow it until it ends (unless --detach)."""
    if not version:
        raise InvalidInput(f"a rollout needs --version: the version to update the instances of {app} to")
    start_at = parse_at(at)
    backend = _backend()
    rollout = backend.rollout_create(app, version, organisation, 1 if canary is None else canary, list(canaries),
                                     1 if batch is None else batch, start_at)
    if detach:
        if as_json:
            _emit(rollout)
            return
        todo = sum(n for state, n in rollout["counts"].items() if state == "pending")
        out.print(f"rollout {rollout['id']} queued: {rollout['app']} to {rollout['version']} on {todo} "
                  f"instance(s), from {_when(rollout['start_at'])} UTC; follow it with "
                  f"`hafen rollout show {rollout['id']}`", soft_wrap=True)
        return
    rollout = follow(backend, rollout, quiet=as_json, timeout=timeout)
    if as_json:
        _emit(rollout)
    else:
        out.print(items_table(rollout))
        out.print(Text.assemble(f"{_title(rollout)}: ", _state(rollout["state"]), f" ({_counts(rollout)})"))
    ended(rollout)


def ended(rollout: dict[str, Any]) -> None:
    """Raise (exit 6) for a rollout that failed or was cancelled."""
    if rollout["state"] == "failed":
        raise OperationFailed(f"{_title(rollout)} failed: {rollout['error']}")
    if rollout["state"] == "cancelled":
        raise OperationFailed(f"{_title(rollout)} was cancelled: {rollout['error']}")


def follow(backend: Backend, rollout: dict[str, Any], quiet: bool, timeout: float | None) -> dict[str, Any]:
    """Poll the rollout until it has ended, with a progress display of each instance; StillRunning past the
    timeout (None: no limit)."""
    title = _title(rollout)
    began = time.monotonic()
    seen: dict[str, tuple[str, str]] = {}

    def changed(key: str, state: str, message: str) -> bool:
        new = seen.get(key) != (state, message)
        seen[key] = (state, message)
        return new

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
        TextColumn("{task.fields[counter]}", markup=False), TimeElapsedColumn(),
        console=err, transient=True, disable=quiet,
    ) as progress:
        overall = progress.add_task(title, total=len(rollout["items"]) or None, counter="")
        tasks: dict[str, TaskID] = {}
        log = not err.is_terminal and not quiet  # where no live display shows, a line per change
        while True:
            items = rollout["items"]
            done = sum(1 for item in items if item["state"] in ITEM_FINISHED)
            progress.update(overall, description=f"{title}: {rollout['state']}", completed=done,
                            total=len(items) or None, counter=f"{done}/{len(items)}")
            for item in items:
                name, state, message = item["instance"], item["state"], item["message"]
                if changed(name, state, message) and log:
                    err.print(f"{title}: {name}: {state}" + (f" ({message})" if message else ""), soft_wrap=True)
                if state == "pending" and not message:
                    continue  # not its turn yet
                text = f"  {name}{' (canary)' if item['canary'] else ''}: {state}" + (f" ({message})" if message
                                                                                      else "")
                if name not in tasks:
                    tasks[name] = progress.add_task(text, total=1, counter="")
                progress.update(tasks[name], description=text, total=None if state == "updating" else 1,
                                completed=1 if state in ITEM_FINISHED else 0)
            if changed("", rollout["state"], rollout["error"]) and log:
                err.print(f"{title}: {rollout['state']}" + (f" ({rollout['error']})" if rollout["error"] else ""),
                          soft_wrap=True)
            if rollout["state"] in FINISHED:
                return rollout
            waited = time.monotonic() - began
            if timeout is not None and waited > timeout:
                minutes, seconds = divmod(int(waited), 60)
                took = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
                raise StillRunning(f"{title} is still {rollout['state']} after {took} ({_counts(rollout)}); it goes "
                                   f"on: follow it with `hafen rollout show {rollout['id']}`, or wait longer with "
                                   "--timeout SECONDS")
            time.sleep(POLL)
            rollout = backend.rollout(rollout["id"])


def items_table(rollout: dict[str, Any]) -> Any:
    table = _table("INSTANCE", "WAVE", "STATE", "FROM", "NOW", "MESSAGE")
    for item in rollout["items"]:
        wave = "canary" if item["canary"] else str(item["wave"])
        table.add_row(item["instance"], wave, _state(item["state"]), item["from_version"], item["version"],
                      item["message"])
    return table


# -- hafen rollout ---------------------------------------------------------------------------------------


@cli.group()
def rollout() -> None:
    """Fleet rollouts (`hafen update --app APP --version V` starts one): follow, pause, resume, cancel."""


@rollout.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def rollout_list(as_json: bool) -> None:
    """The latest rollouts, newest first."""
    rows = _backend().rollouts()
    if as_json:
        _emit(rows)
        return
    table = _table("ID", "APP", "VERSION", "ORGANISATION", "STATE", "INSTANCES", "START (UTC)", "BY")
    for row in rows:
        table.add_row(str(row["id"]), row["app"], row["version"], row["organisation"] or "all", _state(row["state"]),
                      _counts(row), _when(row["start_at"]), row["created_by"])
    out.print(table if rows else "no rollouts")


@rollout.command(name="show")
@click.argument("rollout_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True)
def rollout_show(rollout_id: int, as_json: bool) -> None:
    """A rollout and each of its instances: its turn, state, version before and now, and why."""
    data = _backend().rollout(rollout_id)
    if as_json:
        _emit(data)
        return
    _describe(data)
    out.print(items_table(data))


def _describe(data: dict[str, Any]) -> None:
    out.print(Text.assemble(f"{'rollout':<13} {data['id']}: {data['app']} to {data['version']}, ",
                            _state(data["state"])))
    out.print(f"{'organisation':<13} {data['organisation'] or 'all the creator may update'}")
    out.print(f"{'canaries':<13} {data['canary']}, then batches of {data['batch']}")
    out.print(f"{'start':<13} {_when(data['start_at'])} UTC (started {_when(data['started_at'])}, finished "
              f"{_when(data['finished_at'])})")
    out.print(f"{'created by':<13} {data['created_by']}", soft_wrap=True)
    out.print(f"{'instances':<13} {_counts(data)}")
    if data["error"]:
        out.print(Text.assemble(f"{'error':<13} ", (data["error"], "red")), soft_wrap=True)


def _control(action: str, help_text: str) -> None:
    @rollout.command(name=action, help=help_text)
    @click.argument("rollout_id", metavar="ID", type=int)
    @click.option("--json", "as_json", is_flag=True)
    def command(rollout_id: int, as_json: bool) -> None:
        data = _backend().rollout_control(rollout_id, action)
        if as_json:
            _emit(data)
            return
        out.print(Text.assemble(f"rollout {data['id']}: ", _state(data["state"]), f" ({_counts(data)})"))


_control("pause", "Pause a rollout: no further update starts; those under way finish.")
_control("resume", "Resume a paused rollout.")
_control("cancel", "Cancel a rollout: no further update starts; those under way finish (or roll back).")
