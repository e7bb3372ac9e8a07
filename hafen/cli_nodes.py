"""The command line of the swarm's nodes: hafen node list, join-command, label, drain, activate, evacuate, remove."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from hafen.backup.fingerprint import human_bytes
from hafen.cli import _backend, _emit, _table, _timeout, _wait, cli, err, out
from hafen.errors import HafenError, InvalidInput, OperationFailed


@cli.group()
def node() -> None:
    """The machines of the swarm (operators): where instances run, adding, draining and losing one."""


@node.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def node_list(as_json: bool) -> None:
    """Nodes with their state, labels, memory (total and reserved by instances) and instances."""
    nodes = _backend().nodes()
    if as_json:
        _emit(nodes)
        return
    table = _table("NAME", "ROLE", "STATE", "AVAILABILITY", "LABELS", "CPUS", "MEMORY", "RESERVED", "INSTANCES")
    for item in nodes:
        role = item["role"] + (" (leader)" if item["leader"] else "")
        availability = item["availability"] + (f", drain {item['draining']}" if item["draining"] else "")
        if item["moves_pending"]:
            availability += f", {item['moves_pending']} moving"
        labels = ", ".join(f"{k}={v}" for k, v in sorted(item["labels"].items()) if not k.startswith("hafen."))
        state = Text(item["state"], "green" if item["state"] == "ready" else "red")
        instances = item["instances"]
        shown = ", ".join(instances[:6]) + (f" (+{len(instances) - 6})" if len(instances) > 6 else "")
        table.add_row(item["name"], role, state, availability, labels or "-", f"{item['cpus']:g}",
                      human_bytes(item["memory_bytes"]), human_bytes(item["reserved_bytes"]), shown or "-")
    out.print(table)


@node.command(name="join-command")
@click.option("--json", "as_json", is_flag=True)
def node_join_command(as_json: bool) -> None:
    """What to run to add a machine: copy the images it cannot pull to it, then join the swarm as a worker."""
    data = _backend().node_join()
    if as_json:
        _emit(data)
        return
    out.print(f"# 1. copy to the new machine {data['load_why']}:")
    out.print(data["load"], soft_wrap=True)
    out.print("# 2. on the new machine, join the swarm:")
    out.print(data["join"], soft_wrap=True)


@node.command(name="label")
@click.argument("name")
@click.argument("changes", nargs=-1, required=True, metavar="KEY=VALUE|KEY-...")
@click.option("--json", "as_json", is_flag=True)
def node_label(name: str, changes: tuple[str, ...], as_json: bool) -> None:
    """Set (KEY=VALUE) or remove (KEY-) labels of a node; sizes and organisations ask for labels."""
    data = _backend().node_label(name, list(changes))
    if as_json:
        _emit(data)
        return
    labels = ", ".join(f"{k}={v}" for k, v in sorted(data["labels"].items())) or "none"
    out.print(f"{data['name']}: labels {labels}")


@node.command(name="activate")
@click.argument("name")
def node_activate(name: str) -> None:
    """Let the node take new instances and tasks again (after a drain or a pause)."""
    data = _backend().node_activate(name)
    out.print(f"{data['name']} is {data['availability']}")


def _wait_all(backend: Any, operations: list[dict[str, Any]], timeout: float) -> list[str]:
    """Wait for each operation; print each one's outcome and downtime; return the failures."""
    failures = []
    for op in operations:
        try:
            done = _wait(backend, op, quiet=False, timeout=timeout)
        except OperationFailed as exc:
            failures.append(str(exc))
            err.print(Text(str(exc), "red"), soft_wrap=True)
            continue
        move = done.get("move") or {}
        downtime = move.get("downtime_seconds")
        to = move.get("to_node") or "another node"
        out.print(f"{done['instance']}: moved to {to}"
                  + (f", down for {downtime:.1f} s" if isinstance(downtime, int | float) else ""))
    return failures


@node.command(name="drain")
@click.argument("name")
@click.option("--wait/--no-wait", "wait", default=True, show_default=True,
              help="Wait until every instance has moved (and show each one's downtime).")
@click.option("--json", "as_json", is_flag=True)
@_timeout
def node_drain(name: str, wait: bool, as_json: bool, timeout: float) -> None:
    """Move every instance off a node with its data (back up, restore elsewhere, switch the edge)."""
    backend = _backend()
    data = backend.node_drain(name)
    if as_json and not wait:
        _emit(data)
        return
    moves = data["moves"]
    out.print(f"{data['node']}: {len(moves)} instance(s) to move" + (f"; not moved: {', '.join(data['left'])} "
              "(not running: start or erase them)" if data["left"] else ""))
    if not wait:
        return
    failures = _wait_all(backend, moves, timeout)
    if failures:
        raise OperationFailed(f"{len(failures)} of {len(moves)} moves failed; those instances stay on {data['node']}")
    out.print(f"{data['node']} is drained" if not data["left"] else f"{data['node']}: moves done")


@node.command(name="evacuate")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for the node's name.")
@_timeout
def node_evacuate(name: str, yes: bool, timeout: float) -> None:
    """Restore the instances of a node that no longer answers on other nodes, from their latest verified
    backups (what each loses is shown first)."""
    backend = _backend()
    plan = backend.node_evacuation(name)
    table = _table("INSTANCE", "ORGANISATION", "BACKUP", "TAKEN", "DATA LOST")
    for item in plan["instances"]:
        lost = item["data_lost_seconds"]
        table.add_row(item["instance"], item["organisation"] or "-", item["snapshot"] or "none: not evacuated",
                      (item["backed_up_at"] or "-")[:19].replace("T", " "),
                      _duration(lost) if lost is not None else "everything")
    out.print(table if plan["instances"] else f"no instances on {plan['node']}")
    if not plan["instances"]:
        return
    if not yes:
        typed = click.prompt(f"The instances above lose what changed since their backup. Type the node's name "
                             f"({plan['node']}) to go on", default="", show_default=False)
        if typed != plan["node"]:
            raise InvalidInput(f"the name typed was not {plan['node']}; nothing was changed")
    data = backend.node_evacuate(name, plan["node"])
    if data["skipped"]:
        err.print(Text(f"no verified backup, not evacuated: {', '.join(data['skipped'])}", "yellow"), soft_wrap=True)
    failures = _wait_all(backend, data["operations"], timeout)
    if failures:
        raise HafenError(f"{len(failures)} of {len(data['operations'])} evacuations failed")


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


@node.command(name="remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove a node that still answers (after a drain).")
def node_remove(name: str, force: bool) -> None:
    """Remove a drained or lost node from the swarm (refused while instances live there)."""
    _backend().node_remove(name, force)
    out.print(f"{name} removed from the swarm")
