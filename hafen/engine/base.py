"""The orchestrator behind a small interface: what hafen asks of an engine.

Specs describe what should exist; `observe` returns, in a handful of bulk
calls filtered by label, everything of one installation that does exist. The
controller compares the two. Implementations: `swarm` (real) and `fake`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

from hafen.errors import EngineNotFound

LABEL_PREFIX = "hafen.prefix"
LABEL_INSTANCE = "hafen.instance"
LABEL_SERVICE = "hafen.service"
LABEL_SPEC = "hafen.spec"
LABEL_TEMPLATE = "hafen.template"
LABEL_STACK = "com.docker.stack.namespace"
LABEL_ROLE = "hafen.role"
ROLE_EDGE = "edge"  # the edge proxy's service and containers
LABEL_LOG = "hafen.log"  # digest of the logging driver a service was made with (see Engine.log_driver_of)


@dataclass(frozen=True)
class LogDriver:
    """A Docker logging driver and its options (e.g. syslog to the installation's collector)."""

    name: str
    options: tuple[tuple[str, str], ...] = ()

    def digest(self) -> str:
        return _digest([self.name, list(self.options)])


@dataclass(frozen=True)
class SecretRef:
    name: str
    target: str


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    kind: Literal["volume", "bind"] = "volume"
    read_only: bool = False
    # labels of a volume that the engine creates on first use (on a node other than the controller's)
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class NetworkRef:
    name: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class PublishedPort:
    target: int
    published: int
    protocol: Literal["tcp", "udp"] = "tcp"


@dataclass
class ServiceSpec:
    name: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[SecretRef] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    networks: list[NetworkRef] = field(default_factory=list)
    ports: list[PublishedPort] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    replicas: int = 1
    job: bool = False
    memory_bytes: int | None = None
    nano_cpus: int | None = None
    force_update: int = 0
    # one task on every node the constraints allow (the registry's mirrors), not `replicas`
    global_mode: bool = False
    # at most one task at a time (its volume takes one writer only, as a mail queue): an update stops the
    # old task before it starts the new one
    exclusive: bool = False
    # None: the engine's default for the installation (its log collector); kept out of the digests, the
    # engine compares it on its own label (LABEL_LOG), so that switching the collector on rolls every
    # service over once without every caller's digest comparison seeing a change
    log_driver: LogDriver | None = None

    def _data(self) -> dict[str, object]:
        """The spec as digested; a field added later is left out at its default, so that adding it
        does not change the digest of every existing service (and roll them all over)."""
        data = asdict(self)
        del data["log_driver"]
        for flag in ("global_mode", "exclusive"):
            if not data[flag]:
                del data[flag]
        for port in data["ports"]:
            if port["protocol"] == "tcp":
                del port["protocol"]
        for mount in data["mounts"]:
            for key in ("read_only", "labels"):
                if not mount[key]:
                    del mount[key]
        return data

    def template_digest(self) -> str:
        """Digest of what the tasks run: a change here rolls the tasks over."""
        data = self._data()
        data.pop("replicas")
        return _digest(data)

    def digest(self) -> str:
        """Digest of the whole service: a change here needs an update call."""
        return _digest(self._data())


def log_tag(spec: ServiceSpec) -> str:
    """The syslog tag of a spec's lines: `prefix.instance.service/container` (a Docker log template), from
    which the collector's ingest knows where a line comes from (hafen's own services: instance "")."""
    labels = spec.labels
    service = labels.get(LABEL_SERVICE) or labels.get(LABEL_ROLE) or spec.name
    return f"{labels.get(LABEL_PREFIX, '')}.{labels.get(LABEL_INSTANCE, '')}.{service}/{{{{.ID}}}}"


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TaskState:
    state: str
    template: str
    error: str = ""
    node: str = ""  # the id of the node it was scheduled on ("" before it is)
    addresses: tuple[str, ...] = ()  # its IP addresses on the networks it is attached to
    container: str = ""  # the id of its container, once it has one


@dataclass
class ContainerState:
    id: str
    name: str
    labels: dict[str, str]
    running: bool

    @property
    def spec_digest(self) -> str:
        return self.labels.get(LABEL_SPEC, "")


@dataclass
class NodeState:
    """One machine of the swarm, as the engine reports it."""

    id: str
    hostname: str
    role: str  # manager or worker
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause or drain
    labels: dict[str, str] = field(default_factory=dict)
    nano_cpus: int = 0
    memory_bytes: int = 0
    address: str = ""
    leader: bool = False
    engine_version: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def schedulable(self) -> bool:
        """Whether new tasks may land here."""
        return self.ready and self.availability == "active"


@dataclass(frozen=True)
class JoinInfo:
    """What a new machine needs to join the swarm."""

    worker_token: str
    manager_token: str
    managers: tuple[str, ...]  # "address:port" of the reachable managers


@dataclass
class ServiceState:
    name: str
    labels: dict[str, str]
    replicas: int
    job: bool
    tasks: list[TaskState] = field(default_factory=list)

    @property
    def spec_digest(self) -> str:
        return self.labels.get(LABEL_SPEC, "")

    @property
    def template_digest(self) -> str:
        return self.labels.get(LABEL_TEMPLATE, "")

    def _current(self) -> list[TaskState]:
        return [t for t in self.tasks if t.template == self.template_digest]

    @property
    def running(self) -> int:
        """Tasks of the current template that run (and so passed their health check)."""
        return sum(1 for t in self._current() if t.state == "running")

    @property
    def stale(self) -> int:
        return sum(1 for t in self.tasks if t.template != self.template_digest and t.state == "running")

    @property
    def complete(self) -> bool:
        return any(t.state == "complete" for t in self._current())

    @property
    def failures(self) -> list[TaskState]:
        return [t for t in self._current() if t.state in ("failed", "rejected")]

    @property
    def last_error(self) -> str:
        failures = self.failures
        return failures[-1].error if failures else ""

    def converged(self) -> bool:
        return self.running == self.replicas and self.stale == 0


@dataclass
class Observation:
    """Everything of one installation that exists in the engine, at one moment."""

    services: dict[str, ServiceState] = field(default_factory=dict)
    networks: set[str] = field(default_factory=set)
    volumes: set[str] = field(default_factory=set)
    secrets: set[str] = field(default_factory=set)
    # The edge proxy's running containers (by id) and the networks each is attached to.
    edge_containers: dict[str, set[str]] = field(default_factory=dict)
    # Plain containers hafen runs itself on the controller's node (the edge proxy), by name.
    containers: dict[str, ContainerState] = field(default_factory=dict)
    nodes: dict[str, NodeState] = field(default_factory=dict)
    local_node: str = ""  # the node whose engine hafen talks to
    _by_instance: dict[str, dict[str, ServiceState]] | None = field(default=None, repr=False, compare=False)

    def services_of(self, instance: str) -> dict[str, ServiceState]:
        """The services of one instance by their logical names (indexed once per observation)."""
        if self._by_instance is None:
            self._by_instance = {}
            for state in self.services.values():
                owner = state.labels.get(LABEL_INSTANCE)
                if owner is not None:
                    self._by_instance.setdefault(owner, {})[state.labels.get(LABEL_SERVICE, state.name)] = state
        return self._by_instance.get(instance, {})


class Engine(ABC):
    """What the controller and the service layer need from an orchestrator."""

    # The logging driver of every service and container whose spec names none (set from the settings by
    # get_engine: syslog to the installation's log collector); None: the daemon's default.
    log_driver: LogDriver | None = None

    def log_driver_of(self, spec: ServiceSpec) -> LogDriver | None:
        """The logging driver a spec's tasks get, its tag naming the service for the collector."""
        driver = spec.log_driver or self.log_driver
        if driver is None or driver.name != "syslog" or any(k == "tag" for k, _ in driver.options):
            return driver
        return LogDriver(driver.name, (*driver.options, ("tag", log_tag(spec))))

    def log_changed(self, spec: ServiceSpec, labels: dict[str, str]) -> bool:
        driver = self.log_driver_of(spec)
        return labels.get(LABEL_LOG, "") != (driver.digest() if driver else "")

    @abstractmethod
    def ping(self) -> None:
        """Raise EngineUnavailable unless the engine answers."""

    @abstractmethod
    def ensure_swarm(self, advertise_addr: str) -> bool:
        """Turn swarm mode on if it is off; return whether it was turned on."""

    @abstractmethod
    def watch(self, prefix: str, on_event: Callable[[], None], stop: threading.Event) -> None:
        """Call `on_event` whenever a container of the installation dies, starts or changes its health on
        this node, until `stop` is set. An engine without an event stream returns at once: the controller
        then learns of such changes only by its passes."""

    @abstractmethod
    def follow_service_logs(self, name: str, since: float, on_line: Callable[[str, float], None],
                            stop: threading.Event) -> None:
        """Call `on_line` with each line of a service's log (its tasks on every node) and the time it was
        written (epoch seconds, as the daemon stamped it), for lines written since `since`
        (epoch seconds) and from then on, until `stop` is set and a line comes; the log is opened again after
        the daemon or the service went away (from the last line's time). A fake engine gives its lines once."""

    @abstractmethod
    def observe(self, prefix: str) -> Observation: ...

    @abstractmethod
    def nodes(self) -> list[NodeState]:
        """Every node of the swarm (one call)."""

    @abstractmethod
    def update_node(self, node: str, *, labels: dict[str, str] | None = None,
                    availability: str | None = None) -> None:
        """Set a node's labels (the whole set) and/or its availability (active, pause, drain)."""

    @abstractmethod
    def remove_node(self, node: str, force: bool = False) -> None:
        """Remove a node from the swarm; raise EngineConflict while it is still up (unless forced)."""

    @abstractmethod
    def join_info(self) -> JoinInfo: ...

    @abstractmethod
    def create_network(self, name: str, labels: dict[str, str], internal: bool) -> None: ...

    @abstractmethod
    def remove_network(self, name: str) -> None: ...

    @abstractmethod
    def connect_container(self, network: str, container: str) -> None:
        """Attach a running container to a network without restarting it (done if it already is).

        A container id is local to its node: this engine connects containers of its own node.
        """

    @abstractmethod
    def disconnect_container(self, network: str, container: str) -> None:
        """Detach a container from a network (done if it is not attached or gone)."""

    def exec_in_service(self, service: str, command: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run a command in a running container of the service on this engine's node; its exit code and output.
        Raise EngineNotFound when none runs here."""
        raise EngineNotFound(f"no running container of {service} on this node")

    @abstractmethod
    def create_volume(self, name: str, labels: dict[str, str]) -> None: ...

    @abstractmethod
    def remove_volume(self, name: str) -> None:
        """Remove a volume; raise EngineConflict while a container still uses it."""

    @abstractmethod
    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> None: ...

    @abstractmethod
    def remove_secret(self, name: str) -> None:
        """Remove a secret; raise EngineConflict while a service still uses it."""

    @abstractmethod
    def apply_service(self, spec: ServiceSpec, current: ServiceState | None) -> bool:
        """Create or update a service to match spec; return whether anything changed.

        A one-off job is recreated rather than updated when its spec changed,
        so that it runs again.
        """

    @abstractmethod
    def remove_service(self, name: str) -> None: ...

    @abstractmethod
    def apply_container(self, spec: ServiceSpec, current: ContainerState | None) -> bool:
        """Run a plain container (not a swarm task) on this engine's own node, as the spec says, restarted
        by the engine; recreate it when the spec changed. Ports are published on the node, networks
        (attachable overlays) joined after the default bridge. Return whether anything changed."""

    @abstractmethod
    def remove_container(self, name: str) -> None: ...

    @abstractmethod
    def remove_stopped_containers(self, labels: dict[str, str]) -> None:
        """Remove exited containers with these labels (finished jobs' containers hold volumes)."""

    @abstractmethod
    def service_logs(
        self, name: str, *, since: int | None = None, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]: ...

    @abstractmethod
    def image_exists(self, tag: str) -> bool: ...

    @abstractmethod
    def image_id(self, tag: str) -> str:
        """The id ("sha256:...") of the image the tag names now; "" if there is none."""

    def cpu_usage_ns(self, container: str) -> int | None:
        """The CPU time a container of this node has used so far, in nanoseconds (its cgroup's count);
        None when it cannot be read here (another node's, gone, or an engine that does not say)."""
        return None

    def image_ref(self, tag: str, image_id: str = "") -> str:
        """What a service names to run the locally built image `tag` (the build `image_id` of it, if
        given, else the tag's current one): by digest in the installation's registry once the image is
        pushed there (every node can pull it), else by id (Docker runs an image named by id without
        pulling it) or, without an id, by tag."""
        return image_id or tag
