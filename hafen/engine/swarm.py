"""The real engine: Docker Swarm through the Docker SDK.

Every error of the SDK and of `requests` under it is translated here, in
`translate`, into hafen's own tree (see hafen/errors.py): nothing else escapes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker import types as dt

from hafen.engine.base import (
    LABEL_LOG,
    LABEL_PREFIX,
    LABEL_ROLE,
    LABEL_SPEC,
    LABEL_TEMPLATE,
    ROLE_EDGE,
    ContainerState,
    Engine,
    JoinInfo,
    NodeState,
    Observation,
    ServiceSpec,
    ServiceState,
    TaskState,
)
from hafen.errors import EngineConflict, EngineError, EngineNotFound, EngineRefused, EngineUnavailable

T = TypeVar("T")

TIMEOUT = 20
"""Seconds the engine may take to answer one ordinary call before it counts as unavailable.

hafen's calls are small (label-filtered lists, one object made or removed) and take well
under a second even on a busy machine. The SDK's former 60 s held the controller, and every
API request that pings the engine, for a minute on a hung engine before anyone learnt of it;
20 s still leaves a wide margin. Log streams are not cut by it: once a log's body starts, the
SDK lifts the socket's timeout, so `--follow` may stay silent for as long as it likes.
"""

# A container's end, start and health (Docker sends health_status only when the status changes, not per
# probe; exec events, one per probe, are left out), and the kernel's OOM kill.
WATCHED_EVENTS = ("die", "start", "oom", "health_status")
WATCH_RETRY = 5.0

log = logging.getLogger("hafen.engine")

IMAGE_REF_TTL = 10.0
"""Seconds an image's digest in the registry is taken as known: a push is seen this much later."""

UNAVAILABLE = "the Docker engine does not answer; is it installed and started? (scripts/bootstrap.sh starts it)"

SDK_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    OSError,
)
"""What a call into the SDK may raise: its own errors, and those of the HTTP stack and socket under it."""
# ValueError: an event stream cut off in the middle of an event
WATCH_ERRORS: tuple[type[BaseException], ...] = (*SDK_ERRORS, ValueError)

_IN_USE = re.compile(r"\bin use\b|active endpoints", re.IGNORECASE)


def _lines(stream: Iterable[bytes]) -> Iterator[str]:
    """The lines of a log stream, whose chunks need not end at a line's end."""
    buffer = b""
    for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
    if buffer:
        yield buffer.decode(errors="replace")


def log_time(stamp: str) -> float:
    """Epoch seconds of a log line's RFC 3339 timestamp (Docker's nanoseconds cut to microseconds); now if
    the line has none."""
    try:
        whole, _, fraction = stamp.removesuffix("Z").partition(".")
        return datetime.fromisoformat(f"{whole}.{fraction[:6].ljust(6, '0')}+00:00").timestamp()
    except ValueError:
        return time.time()


def pushed_ref(repo_digests: list[str], registry: str, tag: str) -> str:
    """`registry/repo@sha256:...` among an image's RepoDigests, for the tag `repo:tag`; empty if not pushed."""
    repo = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
    wanted = f"{registry}/{repo}@"
    return next((d for d in repo_digests if d.startswith(wanted)), "")


def translate(action: str, exc: BaseException) -> EngineError:
    """hafen's error for an exception out of the SDK (one of SDK_ERRORS)."""
    if isinstance(exc, docker.errors.APIError):  # before RequestException, which it subclasses
        status = exc.status_code
        explanation = str(exc.explanation or exc)
        message = f"{action}: {explanation}"
        if isinstance(exc, docker.errors.NotFound) or status == 404:
            return EngineNotFound(message)
        if status == 409 or (status in (400, 403) and _IN_USE.search(explanation)):
            return EngineConflict(message)
        if status is not None and 400 <= status < 500:
            return EngineRefused(message)
        return EngineError(message)
    if isinstance(exc, docker.errors.InvalidArgument):
        return EngineRefused(f"{action}: {exc}")
    if isinstance(exc, requests.exceptions.Timeout | urllib3.exceptions.TimeoutError | TimeoutError):
        return EngineUnavailable(f"{action}: the Docker engine did not answer within {TIMEOUT} s")
    return EngineUnavailable(UNAVAILABLE)


@contextlib.contextmanager
def engine_errors(action: str) -> Iterator[None]:
    """Translate what the SDK raises inside the block (for SDK users outside this module, e.g. image builds)."""
    try:
        yield
    except SDK_ERRORS as exc:
        raise translate(action, exc) from exc


def _call(action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except SDK_ERRORS as exc:
        raise translate(action, exc) from exc


def _node(data: dict[str, Any]) -> NodeState:
    spec, desc, status = data.get("Spec") or {}, data.get("Description") or {}, data.get("Status") or {}
    manager = data.get("ManagerStatus") or {}
    resources = desc.get("Resources") or {}
    return NodeState(
        id=data["ID"],
        hostname=desc.get("Hostname", ""),
        role=spec.get("Role", ""),
        state=status.get("State", "unknown"),
        availability=spec.get("Availability", ""),
        labels=dict(spec.get("Labels") or {}),
        nano_cpus=int(resources.get("NanoCPUs") or 0),
        memory_bytes=int(resources.get("MemoryBytes") or 0),
        # a manager's swarm address carries its port; a worker's is what it connects from
        address=manager.get("Addr") or status.get("Addr", ""),
        leader=bool(manager.get("Leader")),
        engine_version=(desc.get("Engine") or {}).get("EngineVersion", ""),
    )


class SwarmEngine(Engine):
    def __init__(self, client: docker.DockerClient | None = None, registry: str = "") -> None:
        self._client = client
        self._local_node = ""
        # the installation's registry as the engines name it (127.0.0.1:PORT), empty: none
        self.registry = registry
        self._images: dict[str, tuple[float, dict[str, Any] | None]] = {}

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = _call("connect", lambda: docker.from_env(timeout=TIMEOUT))
        return self._client

    def ping(self) -> None:
        _call("ping", self.client.ping)

    def ensure_swarm(self, advertise_addr: str) -> bool:
        info = _call("info", self.client.info)
        if info.get("Swarm", {}).get("LocalNodeState") == "active":
            return False
        _call("swarm init", lambda: self.client.swarm.init(advertise_addr=advertise_addr))
        return True

    def watch(self, prefix: str, on_event: Callable[[], None], stop: threading.Event) -> None:
        """Docker's event stream on a client of its own (it holds a connection open), filtered to the
        installation's containers and the actions that change what a pass would see; the stream is opened
        again after the daemon restarted."""
        filters = {"type": ["container"], "label": [f"{LABEL_PREFIX}={prefix}"], "event": list(WATCHED_EVENTS)}
        while not stop.is_set():
            client: docker.DockerClient | None = None
            try:
                client = docker.from_env(timeout=TIMEOUT)
                for _ in client.events(decode=True, filters=filters):
                    if stop.is_set():
                        break
                    on_event()
            except WATCH_ERRORS as exc:
                log.debug("engine events: %s", exc)
            finally:
                if client is not None:
                    client.close()
            stop.wait(WATCH_RETRY)

    def follow_service_logs(self, name: str, since: float, on_line: Callable[[str, float], None],
                            stop: threading.Event) -> None:
        """On a client of its own, as `watch`: the stream stays open for as long as the service lives."""
        while not stop.is_set():
            client: docker.DockerClient | None = None
            try:
                client = docker.from_env(timeout=TIMEOUT)
                stream = client.api.service_logs(name, stdout=True, stderr=True, follow=True, since=int(since),
                                                 timestamps=True)
                for stamped in _lines(stream):
                    stamp, _, line = stamped.partition(" ")
                    at = log_time(stamp)
                    since = at - 1  # opened again, a line may come twice, none is lost
                    on_line(line, at)
                    if stop.is_set():
                        break
            except WATCH_ERRORS as exc:
                log.debug("logs of %s: %s", name, exc)
            finally:
                if client is not None:
                    client.close()
            stop.wait(WATCH_RETRY)

    def cpu_usage_ns(self, container: str) -> int | None:
        """From the container's cgroup: v1 (cpuacct.usage, ns) or v2 (cpu.stat usage_usec), under the
        cgroupfs or the systemd driver's layout."""
        if not re.fullmatch(r"[0-9a-f]{64}", container):
            return None
        root = Path("/sys/fs/cgroup")
        for path in (root / "cpuacct" / "docker" / container / "cpuacct.usage",
                     root / "cpu,cpuacct" / "docker" / container / "cpuacct.usage",
                     root / "cpuacct" / "system.slice" / f"docker-{container}.scope" / "cpuacct.usage"):
            with contextlib.suppress(OSError, ValueError):
                return int(path.read_text())
        for path in (root / "system.slice" / f"docker-{container}.scope" / "cpu.stat",
                     root / "docker" / container / "cpu.stat"):
            with contextlib.suppress(OSError, ValueError):
                for line in path.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) * 1000
        return None

    def observe(self, prefix: str) -> Observation:
        api = self.client.api
        label = {"label": f"{LABEL_PREFIX}={prefix}"}
        services = _call("list services", lambda: api.services(filters=label))
        ids = {s["ID"] for s in services}
        tasks = _call("list tasks", lambda: api.tasks(filters={"service": sorted(ids)})) if ids else []
        by_service: dict[str, list[TaskState]] = {}
        for task in tasks:
            status = task.get("Status", {})
            container_labels = task.get("Spec", {}).get("ContainerSpec", {}).get("Labels") or {}
            by_service.setdefault(task["ServiceID"], []).append(
                TaskState(
                    state=status.get("State", ""),
                    template=container_labels.get(LABEL_TEMPLATE, ""),
                    error=status.get("Err", ""),
                    node=task.get("NodeID", ""),
                    addresses=tuple(address.split("/")[0] for attachment in task.get("NetworksAttachments") or []
                                    for address in attachment.get("Addresses") or []),
                    container=status.get("ContainerStatus", {}).get("ContainerID", ""),
                )
            )
        observation = Observation()
        for svc in services:
            spec = svc["Spec"]
            mode = spec.get("Mode", {})
            job = "ReplicatedJob" in mode
            replicas = (
                mode.get("ReplicatedJob", {}).get("TotalCompletions", 1)
                if job
                else mode.get("Replicated", {}).get("Replicas", 0)
            )
            observation.services[spec["Name"]] = ServiceState(
                name=spec["Name"],
                labels=spec.get("Labels") or {},
                replicas=replicas,
                job=job,
                tasks=by_service.get(svc["ID"], []),
            )
        networks = _call("list networks", lambda: api.networks(filters=label))
        observation.networks = {n["Name"] for n in networks}
        volumes = _call("list volumes", lambda: api.volumes(filters=label))
        observation.volumes = {v["Name"] for v in volumes.get("Volumes") or []}
        secrets = _call("list secrets", lambda: api.secrets(filters=label))
        observation.secrets = {s["Spec"]["Name"] for s in secrets}
        edge = {"label": [f"{LABEL_PREFIX}={prefix}", f"{LABEL_ROLE}={ROLE_EDGE}"]}
        containers = _call("list containers", lambda: api.containers(all=True, filters=edge))
        observation.edge_containers = {
            c["Id"]: set((c.get("NetworkSettings") or {}).get("Networks") or {}) for c in containers
            if c.get("State") == "running"
        }
        for c in containers:
            if c.get("Labels", {}).get("com.docker.swarm.task.id"):
                continue  # a task of a service (an edge of an older hafen), not a container of hafen's own
            name = (c.get("Names") or ["/"])[0].lstrip("/")
            observation.containers[name] = ContainerState(c["Id"], name, c.get("Labels") or {},
                                                          c.get("State") == "running")
        observation.nodes = {node.id: node for node in self.nodes()}
        observation.local_node = self.local_node()
        # A task of a node that does not answer keeps the state the node last reported ("running"); the
        # swarm starts a new one elsewhere (if it may): the old one counts as lost, not as running.
        for state in observation.services.values():
            for task in state.tasks:
                node = observation.nodes.get(task.node)
                if node is not None and not node.ready and task.state == "running":
                    task.state = "lost"
        return observation

    def local_node(self) -> str:
        """The id of the node this engine runs on (asked once: it stays while the swarm does)."""
        if not self._local_node:
            info = _call("info", self.client.info)
            self._local_node = (info.get("Swarm") or {}).get("NodeID", "")
        return self._local_node

    def nodes(self) -> list[NodeState]:
        return [_node(n) for n in _call("list nodes", self.client.api.nodes)]

    def update_node(self, node: str, *, labels: dict[str, str] | None = None,
                    availability: str | None = None) -> None:
        api = self.client.api
        current = _call(f"inspect node {node}", lambda: api.inspect_node(node))
        spec = dict(current.get("Spec") or {})
        if labels is not None:
            spec["Labels"] = labels
        if availability is not None:
            spec["Availability"] = availability
        version = current["Version"]["Index"]
        _call(f"update node {node}", lambda: api.update_node(current["ID"], version, spec))

    def remove_node(self, node: str, force: bool = False) -> None:
        _call(f"remove node {node}", lambda: self.client.api.remove_node(node, force=force))

    def join_info(self) -> JoinInfo:
        swarm = _call("inspect swarm", self.client.api.inspect_swarm)
        tokens = swarm.get("JoinTokens") or {}
        managers = tuple(sorted(n.address for n in self.nodes() if n.role == "manager" and n.ready and n.address))
        return JoinInfo(tokens.get("Worker", ""), tokens.get("Manager", ""), managers)

    def create_network(self, name: str, labels: dict[str, str], internal: bool) -> None:
        _call(
            f"create network {name}",
            lambda: self.client.networks.create(
                name, driver="overlay", internal=internal, attachable=True, labels=labels, scope="swarm"
            ),
        )

    def remove_network(self, name: str) -> None:
        with contextlib.suppress(EngineNotFound):
            _call(f"remove network {name}", lambda: self.client.api.remove_network(name))

    def connect_container(self, network: str, container: str) -> None:
        try:
            _call(f"connect {container[:12]} to network {network}",
                  lambda: self.client.api.connect_container_to_network(container, network))
        except docker.errors.NotFound as exc:
            raise EngineError(f"connect {container[:12]} to network {network}: {exc.explanation}") from exc
        except EngineError as exc:
            if "already exists" not in str(exc):
                raise

    def disconnect_container(self, network: str, container: str) -> None:
        try:
            _call(f"disconnect {container[:12]} from network {network}",
                  lambda: self.client.api.disconnect_container_from_network(container, network))
        except docker.errors.NotFound:
            pass
        except EngineError as exc:
            if "is not connected" not in str(exc):
                raise

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        _call(f"create volume {name}", lambda: self.client.volumes.create(name=name, labels=labels))

    def remove_volume(self, name: str) -> None:
        with contextlib.suppress(EngineNotFound):
            _call(f"remove volume {name}", lambda: self.client.api.remove_volume(name))

    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> None:
        _call(f"create secret {name}", lambda: self.client.secrets.create(name=name, data=data, labels=labels))

    def remove_secret(self, name: str) -> None:
        with contextlib.suppress(EngineNotFound):
            _call(f"remove secret {name}", lambda: self.client.api.remove_secret(name))

    def _secret_ids(self, names: list[str]) -> dict[str, str]:
        if not names:
            return {}
        found = _call("list secrets", lambda: self.client.api.secrets(filters={"name": names}))
        return {s["Spec"]["Name"]: s["ID"] for s in found}

    def _kwargs(self, spec: ServiceSpec) -> dict[str, Any]:
        secret_ids = self._secret_ids([s.name for s in spec.secrets])
        missing = [s.name for s in spec.secrets if s.name not in secret_ids]
        if missing:
            raise EngineError(f"secrets missing for {spec.name}: {', '.join(missing)}")
        template = spec.template_digest()
        container_labels = {**spec.labels, LABEL_TEMPLATE: template}
        if spec.job:
            mode = dt.ServiceMode("replicated-job", replicas=1, concurrency=1)
        elif spec.global_mode:
            mode = dt.ServiceMode("global")
        else:
            mode = dt.ServiceMode("replicated", replicas=spec.replicas)
        ports = [
            {"Protocol": p.protocol, "TargetPort": p.target, "PublishedPort": p.published, "PublishMode": "host"}
            for p in spec.ports
        ]
        driver = self.log_driver_of(spec)
        return {
            "image": spec.image,
            "name": spec.name,
            "log_driver": driver.name if driver else None,
            "log_driver_options": dict(driver.options) if driver else None,
            "command": spec.command,
            "env": [f"{k}={v}" for k, v in spec.env.items()],
            "labels": {**spec.labels, LABEL_SPEC: spec.digest(), LABEL_TEMPLATE: template,
                       LABEL_LOG: driver.digest() if driver else ""},
            "container_labels": container_labels,
            "mode": mode,
            "mounts": [dt.Mount(m.target, m.source, type=m.kind, read_only=m.read_only, labels=dict(m.labels) or None)
                       for m in spec.mounts],
            "networks": [dt.NetworkAttachmentConfig(n.name, aliases=list(n.aliases)) for n in spec.networks],
            "secrets": [
                dt.SecretReference(secret_ids[s.name], s.name, filename=s.target, mode=0o444)
                for s in spec.secrets
            ],
            # DNS round robin: the swarm's virtual IPs need IPVS, which not every kernel has
            # (these machines' does not); the edge balances over the DNS answers itself.
            "endpoint_spec": dt.EndpointSpec(
                mode="dnsrr",
                ports=cast(Any, ports) or None,
            ),
            "constraints": spec.constraints or None,
            "resources": dt.Resources(mem_limit=spec.memory_bytes, cpu_limit=spec.nano_cpus)
            if spec.memory_bytes or spec.nano_cpus
            else None,
            "restart_policy": dt.RestartPolicy(condition="none" if spec.job else "any", delay=1_000_000_000),
            "update_config": None
            if spec.job
            else dt.UpdateConfig(parallelism=1, delay=0,
                                 order="stop-first" if spec.ports or spec.exclusive else "start-first",
                                 failure_action="rollback", monitor=5_000_000_000),
            "rollback_config": None if spec.job else dt.RollbackConfig(parallelism=1, order="stop-first"),
            "stop_grace_period": 10_000_000_000,
            "init": True,
            # Docker 20.10 stores an update's container spec with an empty DNS configuration where the
            # create's had none: a change of the task template, so the first scale of a service rolled
            # its running tasks over. Created with it, the spec stays the same.
            "dns_config": dt.DNSConfig(),
        }

    def apply_service(self, spec: ServiceSpec, current: ServiceState | None) -> bool:
        # a job is not run again for a new logging driver alone (its next run gets it)
        if current is not None and current.spec_digest == spec.digest() and (
                spec.job or not self.log_changed(spec, current.labels)):
            return False
        kwargs = self._kwargs(spec)
        if current is not None and spec.job:
            self.remove_service(spec.name)
            current = None
        if current is None:
            _call(f"create service {spec.name}", lambda: self.client.services.create(**kwargs))
            return True
        service = _call(f"get service {spec.name}", lambda: self.client.services.get(spec.name))
        kwargs.pop("name")
        if spec.force_update:
            kwargs["force_update"] = spec.force_update
        _call(f"update service {spec.name}", lambda: service.update(**kwargs))
        return True

    def apply_container(self, spec: ServiceSpec, current: ContainerState | None) -> bool:
        digest = spec.digest()
        driver = self.log_driver_of(spec)
        if (current is not None and current.spec_digest == digest and current.running
                and not self.log_changed(spec, current.labels)):
            return False
        if current is not None:
            self.remove_container(current.name)
        client = self.client
        container = _call(f"create container {spec.name}", lambda: client.containers.create(
            spec.image, spec.command, name=spec.name,
            labels={**spec.labels, LABEL_SPEC: digest, LABEL_LOG: driver.digest() if driver else ""},
            log_config=dt.LogConfig(type=driver.name, config=dict(driver.options)) if driver else None,
            environment=spec.env,
            mounts=[dt.Mount(m.target, m.source, type=m.kind, read_only=m.read_only) for m in spec.mounts],
            ports={f"{p.target}/{p.protocol}": p.published for p in spec.ports},
            restart_policy={"Name": "always"}, mem_limit=spec.memory_bytes or 0, init=True, detach=True,
        ))
        try:
            for network in spec.networks:
                _call(f"connect {spec.name} to network {network.name}",
                      partial(client.api.connect_container_to_network, spec.name, network.name,
                              aliases=list(network.aliases) or None))
            _call(f"start container {spec.name}", container.start)
        except EngineError:
            self.remove_container(spec.name)  # nothing half-made: the next pass makes it again
            raise
        return True

    def remove_container(self, name: str) -> None:
        with contextlib.suppress(EngineNotFound):
            _call(f"remove container {name}", lambda: self.client.api.remove_container(name, force=True))

    def remove_service(self, name: str) -> None:
        with contextlib.suppress(EngineNotFound):
            _call(f"remove service {name}", lambda: self.client.api.remove_service(name))

    def exec_in_service(self, service: str, command: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        filters = {"label": [f"com.docker.swarm.service.name={service}"], "status": ["running"]}
        found = _call("list containers", lambda: self.client.containers.list(filters=filters))
        if not found:
            raise EngineNotFound(f"no running container of {service} on this node")
        result = _call(f"exec in {service}", partial(found[0].exec_run, command, environment=env or {}))
        return int(result.exit_code or 0), (result.output or b"").decode(errors="replace")

    def remove_stopped_containers(self, labels: dict[str, str]) -> None:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()], "status": ["exited", "created", "dead"]}
        containers = _call("list containers", lambda: self.client.containers.list(all=True, filters=filters))
        for container in containers:
            with contextlib.suppress(EngineNotFound):
                _call(f"remove container {container.name}", partial(container.remove, force=True))

    def service_logs(
        self, name: str, *, since: int | None = None, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        action = f"logs of {name}"
        try:
            stream = _call(
                action,
                lambda: self.client.api.service_logs(
                    name,
                    stdout=True,
                    stderr=True,
                    follow=follow,
                    since=since or 0,
                    tail=str(tail) if tail is not None else "all",
                    timestamps=False,
                ),
            )
        except EngineNotFound as exc:
            raise EngineNotFound(f"no service {name}") from exc
        with engine_errors(action):  # the stream is read here, outside the call that opened it
            yield from _lines(stream)

    def _inspect_image(self, name: str) -> dict[str, Any] | None:
        """An image's inspection, looked up at most every few seconds (every pass renders every stack)."""
        cached = self._images.get(name)
        if cached is not None and time.monotonic() - cached[0] < IMAGE_REF_TTL:
            return cached[1]
        try:
            image: dict[str, Any] | None = _call(f"inspect image {name}", lambda: self.client.api.inspect_image(name))
        except EngineNotFound:
            image = None
        self._images[name] = (time.monotonic(), image)
        return image

    def image_id(self, tag: str) -> str:
        image = self._inspect_image(tag)
        return str(image["Id"]) if image else ""

    def image_ref(self, tag: str, image_id: str = "") -> str:
        """The image's digest in the registry (see Engine.image_ref), else its id or tag."""
        if not self.registry:
            return image_id or tag
        image = self._inspect_image(image_id or tag)
        return (pushed_ref(image.get("RepoDigests") or [], self.registry, tag) if image else "") or image_id or tag

    def image_exists(self, tag: str) -> bool:
        try:
            _call(f"inspect image {tag}", lambda: self.client.api.inspect_image(tag))
        except EngineNotFound:
            return False
        return True
