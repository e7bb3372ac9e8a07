"""An in-memory engine for fast unit tests of the controller's logic.

Services run (and jobs complete) as soon as they are applied, unless a test
says otherwise through `fail_jobs`, `hold` or `down`, or makes a call raise
with `fail`.
"""

from __future__ import annotations

import hashlib
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hafen.engine.base import (
    LABEL_PREFIX,
    LABEL_ROLE,
    LABEL_SPEC,
    LABEL_TEMPLATE,
    ROLE_EDGE,
    ContainerState,
    Engine,
    JoinInfo,
    LogDriver,
    NodeState,
    Observation,
    ServiceSpec,
    ServiceState,
    TaskState,
)
from hafen.errors import EngineConflict, EngineError, EngineNotFound, EngineRefused, EngineUnavailable

GIB = 1024**3


def _default_nodes() -> dict[str, NodeState]:
    return {"node1": NodeState("node1", "host1", "manager", "ready", "active", nano_cpus=2_000_000_000,
                               memory_bytes=24 * GIB, address="127.0.0.1:2377", leader=True)}


@dataclass
class _Object:
    labels: dict[str, str]
    internal: bool = False
    data: bytes = b""


def fake_address(service: str, replica: int) -> str:
    """A stable address for a fake task: what the fake edge's open requests name."""
    digest = zlib.crc32(service.encode())
    return f"10.{digest % 250}.{digest // 250 % 250}.{replica + 2}"


@dataclass
class FakeEngine(Engine):
    services: dict[str, ServiceSpec] = field(default_factory=dict)
    networks: dict[str, _Object] = field(default_factory=dict)
    volumes: dict[str, _Object] = field(default_factory=dict)
    secrets: dict[str, _Object] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)
    # tag: reference in the registry, for the images "pushed" there (image_ref)
    pushed: dict[str, str] = field(default_factory=dict)
    # tag: its image id, for tags "rebuilt" (others have one derived from the tag)
    image_ids: dict[str, str] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)
    fail_jobs: set[str] = field(default_factory=set)
    hold: set[str] = field(default_factory=set)
    # image (as a spec names it): what of it fails, "job" (its jobs exit with an error) or "service" (its
    # services' tasks exit as they start): a build broken on purpose
    broken_images: dict[str, str] = field(default_factory=dict)
    # service name: the error its tasks are rejected with (three of them, as a swarm retrying them)
    task_errors: dict[str, str] = field(default_factory=dict)
    # container ("SERVICE.REPLICA"): the CPU time it has used, in ns (set by tests of autoscaling)
    cpu_ns: dict[str, int] = field(default_factory=dict)
    down: bool = False
    swarm: bool = True
    calls: list[str] = field(default_factory=list)
    raises: dict[str, list[BaseException]] = field(default_factory=dict)
    # What a job prints when it runs (set by tests of jobs that report through their log)
    job_output: Callable[[ServiceSpec], list[str]] | None = None

    def fail(self, call: str, exc: BaseException, times: int = 1) -> None:
        """Make the next `times` calls raise exc: a method ("apply_service") or one call ("apply_service x_web")."""
        self.raises.setdefault(call, []).extend([exc] * times)
    # Networks connected at run time, by container id; and how often a service's containers were replaced.
    connected: dict[str, set[str]] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    node_states: dict[str, NodeState] = field(default_factory=_default_nodes)
    # Plain containers by name (the edge proxy), as their spec says; they run once made.
    containers: dict[str, ServiceSpec] = field(default_factory=dict)
    # The logging driver each service and container was last applied with (Engine.log_driver_of).
    log_drivers: dict[str, LogDriver | None] = field(default_factory=dict)
    # commands run in services' containers (exec_in_service): service, command, environment
    execs: list[tuple[str, list[str], dict[str, str]]] = field(default_factory=list)

    def add_node(self, node_id: str, hostname: str, memory_gib: int = 24, role: str = "worker",
                 labels: dict[str, str] | None = None) -> NodeState:
        node = NodeState(node_id, hostname, role, "ready", "active", dict(labels or {}), 2_000_000_000,
                         memory_gib * GIB, f"10.9.0.{len(self.node_states) + 1}")
        self.node_states[node_id] = node
        return node

    def _node_of(self, spec: ServiceSpec) -> str:
        """Where a task of the spec runs: the node its constraint names, else the first that takes tasks."""
        for constraint in spec.constraints:
            key, _, value = (part.strip() for part in constraint.partition("=="))
            if key == "node.id":
                return value
        return next((n.id for n in self.node_states.values() if n.schedulable), "")

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise EngineUnavailable("the Docker engine does not answer")
        for key in (call, call.split(" ", 1)[0]):
            queued = self.raises.get(key)
            if queued:
                raise queued.pop(0)

    def ping(self) -> None:
        self._check("ping")

    def watch(self, prefix: str, on_event: Callable[[], None], stop: threading.Event) -> None:
        """No event stream: the tests drive the passes."""

    def follow_service_logs(self, name: str, since: float, on_line: Callable[[str, float], None],
                            stop: threading.Event) -> None:
        for line in self.logs.get(name, []):
            on_line(line, time.time())

    def ensure_swarm(self, advertise_addr: str) -> bool:
        self._check("ensure_swarm")
        was = self.swarm
        self.swarm = True
        return not was

    def state_of(self, spec: ServiceSpec) -> ServiceState:
        template = spec.template_digest()
        labels = {**spec.labels, LABEL_SPEC: spec.digest(), LABEL_TEMPLATE: template}
        tasks: list[TaskState] = []
        node = self._node_of(spec)
        lost = node in self.node_states and not self.node_states[node].ready
        if lost:
            tasks = [TaskState("lost", template, node=node)] * max(spec.replicas, 1)
        elif spec.name in self.task_errors:
            tasks = [TaskState("rejected", template, self.task_errors[spec.name], node=node)] * 3
        elif spec.name in self.hold:
            tasks = [TaskState("starting", template, node=node)] * max(spec.replicas, 1)
        elif self.broken_images.get(spec.image) == ("job" if spec.job else "service"):
            tasks = [TaskState("failed", template, "task: non-zero exit (1)", node=node)] * 3
        elif spec.job:
            failed = spec.name in self.fail_jobs
            tasks = [TaskState("failed" if failed else "complete", template,
                               "task: non-zero exit (1)" if failed else "", node=node)]
        else:
            tasks = [TaskState("running", template, node=node, addresses=(fake_address(spec.name, index),),
                               container=f"{spec.name}.{index}") for index in range(spec.replicas)]
        return ServiceState(spec.name, labels, spec.replicas, spec.job, tasks)

    def edge_containers(self, prefix: str) -> dict[str, set[str]]:
        """The edge proxy's running containers, one per replica, with the networks each is on."""
        result: dict[str, set[str]] = {}
        for spec in [*self.services.values(), *self.containers.values()]:
            if spec.labels.get(LABEL_PREFIX) != prefix or spec.labels.get(LABEL_ROLE) != ROLE_EDGE:
                continue
            running = 1 if spec.name in self.containers else self.state_of(spec).running
            for task in range(running):
                cid = f"{spec.name}.{task}.{self.generations.get(spec.name, 0)}"
                result[cid] = {n.name for n in spec.networks} | self.connected.get(cid, set())
        return result

    def replace_containers(self, service: str) -> None:
        """As when a service's tasks are rescheduled: new containers, without run-time attachments."""
        self.generations[service] = self.generations.get(service, 0) + 1

    def observe(self, prefix: str) -> Observation:
        self._check("observe")

        def mine(labels: dict[str, str]) -> bool:
            return labels.get(LABEL_PREFIX) == prefix

        return Observation(
            services={n: self.state_of(s) for n, s in self.services.items() if mine(s.labels)},
            networks={n for n, o in self.networks.items() if mine(o.labels)},
            volumes={n for n, o in self.volumes.items() if mine(o.labels)},
            secrets={n for n, o in self.secrets.items() if mine(o.labels)},
            edge_containers=self.edge_containers(prefix),
            nodes=dict(self.node_states),
            local_node="node1",
            containers={name: ContainerState(f"{name}.0.{self.generations.get(name, 0)}", name,
                                             {**spec.labels, LABEL_SPEC: spec.digest()}, True)
                        for name, spec in self.containers.items() if mine(spec.labels)},
        )

    def apply_container(self, spec: ServiceSpec, current: ContainerState | None) -> bool:
        self._check(f"apply_container {spec.name}")
        self.log_drivers[spec.name] = self.log_driver_of(spec)
        if current is not None and current.spec_digest == spec.digest() and current.running:
            return False
        if spec.name in self.containers:
            self.replace_containers(spec.name)
        self.containers[spec.name] = spec
        return True

    def remove_container(self, name: str) -> None:
        self._check(f"remove_container {name}")
        self.containers.pop(name, None)

    def nodes(self) -> list[NodeState]:
        self._check("nodes")
        return list(self.node_states.values())

    def _find_node(self, node: str) -> NodeState:
        found = self.node_states.get(node) or next(
            (n for n in self.node_states.values() if n.hostname == node), None)
        if found is None:
            raise EngineNotFound(f"node {node} not found")
        return found

    def update_node(self, node: str, *, labels: dict[str, str] | None = None,
                    availability: str | None = None) -> None:
        self._check(f"update_node {node}")
        found = self._find_node(node)
        if availability is not None and availability not in ("active", "pause", "drain"):
            raise EngineRefused(f"invalid availability {availability!r}")
        if labels is not None:
            found.labels = dict(labels)
        if availability is not None:
            found.availability = availability

    def remove_node(self, node: str, force: bool = False) -> None:
        self._check(f"remove_node {node}")
        found = self._find_node(node)
        if found.ready and not force:
            raise EngineConflict(f"node {found.hostname} is not down and can't be removed")
        if found.role == "manager" and not force:
            raise EngineConflict(f"node {found.hostname} is a manager; demote it first")
        del self.node_states[found.id]

    def join_info(self) -> JoinInfo:
        self._check("join_info")
        managers = tuple(n.address for n in self.node_states.values() if n.role == "manager")
        return JoinInfo("SWMTKN-1-fake-worker", "SWMTKN-1-fake-manager", managers)

    def create_network(self, name: str, labels: dict[str, str], internal: bool) -> None:
        self._check(f"create_network {name}")
        if name in self.networks:
            raise EngineConflict(f"network {name} exists")
        self.networks[name] = _Object(labels, internal=internal)

    def remove_network(self, name: str) -> None:
        self._check(f"remove_network {name}")
        if any(name in {n.name for n in s.networks} for s in self.services.values()):
            raise EngineConflict(f"network {name} is in use")
        if any(name in networks for networks in self.connected.values()):
            raise EngineConflict(f"network {name} has active endpoints")
        self.networks.pop(name, None)

    def _containers(self) -> set[str]:
        prefixes = {s.labels.get(LABEL_PREFIX, "") for s in self.services.values()}
        return {cid for prefix in prefixes for cid in self.edge_containers(prefix)}

    def connect_container(self, network: str, container: str) -> None:
        self._check(f"connect_container {network} {container}")
        # as Docker: a service's container joins only a network a running task on its node uses
        in_use = any(
            network in {n.name for n in spec.networks} and self.state_of(spec).running > 0
            for spec in self.services.values()
        )
        if network not in self.networks or not (in_use or any(network in n for n in self.connected.values())):
            raise EngineError(f"connect {container} to network {network}: network {network} not found")
        if container not in self._containers():
            raise EngineError(f"no container {container}")
        self.connected.setdefault(container, set()).add(network)

    def disconnect_container(self, network: str, container: str) -> None:
        self._check(f"disconnect_container {network} {container}")
        self.connected.get(container, set()).discard(network)

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self._check(f"create_volume {name}")
        self.volumes.setdefault(name, _Object(labels))

    def remove_volume(self, name: str) -> None:
        self._check(f"remove_volume {name}")
        if any(name in {m.source for m in s.mounts} for s in self.services.values()):
            raise EngineConflict(f"volume {name} is in use")
        self.volumes.pop(name, None)

    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> None:
        self._check(f"create_secret {name}")
        if name in self.secrets:
            raise EngineConflict(f"secret {name} exists")
        self.secrets[name] = _Object(labels, data=data)

    def remove_secret(self, name: str) -> None:
        self._check(f"remove_secret {name}")
        if any(name in {r.name for r in s.secrets} for s in self.services.values()):
            raise EngineConflict(f"secret {name} is still in use")
        self.secrets.pop(name, None)

    def apply_service(self, spec: ServiceSpec, current: ServiceState | None) -> bool:
        self._check(f"apply_service {spec.name}")
        self.log_drivers[spec.name] = self.log_driver_of(spec)
        if current is not None and current.spec_digest == spec.digest():
            return False
        missing = [s.name for s in spec.secrets if s.name not in self.secrets]
        if missing:
            raise EngineError(f"secrets missing for {spec.name}: {', '.join(missing)}")
        self.services[spec.name] = spec
        if spec.job and self.job_output is not None:
            self.logs[spec.name] = self.job_output(spec)
        return True

    def remove_service(self, name: str) -> None:
        self._check(f"remove_service {name}")
        self.services.pop(name, None)

    def exec_in_service(self, service: str, command: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        """Recorded in `execs`; a service that runs a task "runs" it with exit code 0."""
        self._check(f"exec_in_service {service}")
        if service not in self.services or not self.services[service].replicas:
            return super().exec_in_service(service, command, env)
        self.execs.append((service, list(command), dict(env or {})))
        return 0, ""

    def remove_stopped_containers(self, labels: dict[str, str]) -> None:
        self._check("remove_stopped_containers")

    def service_logs(
        self, name: str, *, since: int | None = None, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        self._check(f"service_logs {name}")
        if name not in self.services:
            raise EngineNotFound(f"no service {name}")
        lines = self.logs.get(name, [])
        yield from (lines[-tail:] if tail else lines)

    def image_id(self, tag: str) -> str:
        if tag not in self.images:
            return ""
        return self.image_ids.get(tag) or "sha256:" + hashlib.sha256(tag.encode()).hexdigest()

    def cpu_usage_ns(self, container: str) -> int | None:
        return self.cpu_ns.get(container)

    def image_ref(self, tag: str, image_id: str = "") -> str:
        if image_id and image_id != self.image_id(tag):
            return image_id  # an older build of the tag: never pushed here
        return self.pushed.get(tag) or image_id or tag

    def image_exists(self, tag: str) -> bool:
        self._check(f"image_exists {tag}")
        return tag in self.images
