"""Where a new instance goes: the node with the most memory not yet reserved by instances, among those
whose labels the instance's size and organisation ask for.

Reserved memory is the sum of the memory limits of an instance's long-running services (its web
service times its replicas), whatever they use at the moment: the limits are what the node promised.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from hafen.catalog import get_app
from hafen.engine.base import NodeState
from hafen.errors import HafenError
from hafen.instances.models import Instance
from hafen.instances.stack import memory_bytes

DRAIN_LABEL = "hafen.drain"  # on a node being drained: "moving" until its instances are off, then "done"


class NoNode(HafenError):
    """No node may take the instance."""


@cache
def reserved(app_name: str, version: str, size: str, replicas: int) -> tuple[int, int]:
    """Memory (bytes) and CPU (nano CPUs) the instance's long-running services may use, by their limits."""
    app = get_app(app_name)
    template = app.render(name="placement", version=version, size=app.sizes[size], replicas=replicas, app=app)
    memory = cpus = 0
    for svc, tpl in template.services.items():
        if tpl.job:
            continue
        count = replicas if svc == app.web_service else tpl.replicas
        memory += memory_bytes(tpl.memory) * count if tpl.memory else 0
        cpus += int(tpl.cpus * 1e9) * count if tpl.cpus else 0
    return memory, cpus


def reserved_bytes(app_name: str, version: str, size: str, replicas: int) -> int:
    """Memory the instance's long-running services may use, by their limits."""
    return reserved(app_name, version, size, replicas)[0]


def reserved_by_node(instances: Iterable[Instance]) -> dict[str, int]:
    """Memory reserved on each node by the instances placed there (sandboxes included: they run)."""
    reserved: dict[str, int] = {}
    for instance in instances:
        if instance.node_id:
            reserved[instance.node_id] = reserved.get(instance.node_id, 0) + reserved_bytes(
                instance.app, instance.version, instance.size, instance.replicas)
    return reserved


def wanted_labels(instance: Instance) -> dict[str, str]:
    """The node labels the instance's size and organisation ask for."""
    app = get_app(instance.app)
    size = app.sizes.get(instance.size)
    wanted = dict(size.node_labels) if size is not None else {}
    if instance.organisation is not None:
        wanted.update(instance.organisation.node_labels or {})
    return wanted


def choose(nodes: Iterable[NodeState], reserved: dict[str, int], wanted: dict[str, str],
           avoid: Iterable[str] = ()) -> NodeState:
    """The node with the most unreserved memory among those that take new tasks, are not being drained and
    carry `wanted`."""
    avoided = set(avoid)
    eligible = [n for n in nodes if n.schedulable and n.id not in avoided and DRAIN_LABEL not in n.labels
                and all(n.labels.get(key) == value for key, value in wanted.items())]
    if not eligible:
        asked = ", ".join(f"{k}={v}" for k, v in sorted(wanted.items()))
        raise NoNode("no node takes new instances" + (f" with the labels {asked}" if asked else "")
                     + ": add one (hafen node join-command) or label one (hafen node label)")
    return max(eligible, key=lambda n: (n.memory_bytes - reserved.get(n.id, 0), n.hostname))
