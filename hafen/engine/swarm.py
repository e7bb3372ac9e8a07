"""The real engine: Docker Swarm through the Docker SDK.

Every SDK error is translated here into hafen's own tree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar, cast

import docker
import docker.errors
import requests.exceptions
from docker import types as dt

from hafen.engine.base import (
    LABEL_PREFIX,
    LABEL_ROLE,
    LABEL_SPEC,
    LABEL_TEMPLATE,
    ROLE_EDGE,
    Engine,
    Observation,
    ServiceSpec,
    ServiceState,
    TaskState,
)
from hafen.errors import EngineConflict, EngineError, EngineUnavailable

T = TypeVar("T")


def _call(action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except docker.errors.NotFound:
        raise
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise EngineConflict(f"{action}: {exc.explanation}") from exc
        raise EngineError(f"{action}: {exc.explanation or exc}") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise EngineUnavailable(
            "the Docker engine does not answer; is it installed and started? (scripts/bootstrap.sh starts it)"
        ) from exc


class SwarmEngine(Engine):
    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = _call("connect", lambda: docker.from_env(timeout=60))
        return self._client

    def ping(self) -> None:
        _call("ping", self.client.ping)

    def ensure_swarm(self, advertise_addr: str) -> bool:
        info = _call("info", self.client.info)
        if info.get("Swarm", {}).get("LocalNodeState") == "active":
            return False
        _call("swarm init", lambda: self.client.swarm.init(advertise_addr=advertise_addr))
        return True

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
                    desired_state=task.get("DesiredState", ""),
                    template=container_labels.get(LABEL_TEMPLATE, ""),
                    error=status.get("Err", ""),
                    container_id=status.get("ContainerStatus", {}).get("ContainerID", ""),
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
        containers = _call("list containers", lambda: api.containers(filters=edge))
        observation.edge_containers = {
            c["Id"]: set((c.get("NetworkSettings") or {}).get("Networks") or {}) for c in containers
        }
        return observation

    def create_network(self, name: str, labels: dict[str, str], internal: bool) -> None:
        _call(
            f"create network {name}",
            lambda: self.client.networks.create(
                name, driver="overlay", internal=internal, attachable=True, labels=labels, scope="swarm"
            ),
        )

    def remove_network(self, name: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
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
        with contextlib.suppress(docker.errors.NotFound):
            _call(f"remove volume {name}", lambda: self.client.api.remove_volume(name))

    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> None:
        _call(f"create secret {name}", lambda: self.client.secrets.create(name=name, data=data, labels=labels))

    def remove_secret(self, name: str) -> None:
        def remove() -> None:
            try:
                self.client.api.remove_secret(name)
            except docker.errors.APIError as exc:
                if exc.status_code == 400 and "in use" in str(exc.explanation):
                    raise EngineConflict(f"secret {name} is still in use") from exc
                raise

        with contextlib.suppress(docker.errors.NotFound):
            _call(f"remove secret {name}", remove)

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
        mode = (
            dt.ServiceMode("replicated-job", replicas=1, concurrency=1)
            if spec.job
            else dt.ServiceMode("replicated", replicas=spec.replicas)
        )
        ports = [
            {"Protocol": "tcp", "TargetPort": p.target, "PublishedPort": p.published, "PublishMode": "host"}
            for p in spec.ports
        ]
        return {
            "image": spec.image,
            "name": spec.name,
            "command": spec.command,
            "env": [f"{k}={v}" for k, v in spec.env.items()],
            "labels": {**spec.labels, LABEL_SPEC: spec.digest(), LABEL_TEMPLATE: template},
            "container_labels": container_labels,
            "mode": mode,
            "mounts": [dt.Mount(m.target, m.source, type=m.kind) for m in spec.mounts],
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
            else dt.UpdateConfig(parallelism=1, delay=0, order="start-first" if not spec.ports else "stop-first",
                                 failure_action="rollback", monitor=5_000_000_000),
            "rollback_config": None if spec.job else dt.RollbackConfig(parallelism=1, order="stop-first"),
            "stop_grace_period": 10_000_000_000,
            "init": True,
        }

    def apply_service(self, spec: ServiceSpec, current: ServiceState | None) -> bool:
        if current is not None and current.spec_digest == spec.digest():
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

    def remove_service(self, name: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            _call(f"remove service {name}", lambda: self.client.api.remove_service(name))

    def remove_stopped_containers(self, labels: dict[str, str]) -> None:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()], "status": ["exited", "created", "dead"]}
        containers = _call("list containers", lambda: self.client.containers.list(all=True, filters=filters))
        for container in containers:
            with contextlib.suppress(docker.errors.NotFound):
                _call(f"remove container {container.name}", partial(container.remove, force=True))

    def service_logs(
        self, name: str, *, since: int | None = None, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        try:
            stream = _call(
                f"logs of {name}",
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
        except docker.errors.NotFound as exc:
            raise EngineError(f"no service {name}") from exc
        buffer = b""
        for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if buffer:
            yield buffer.decode(errors="replace")

    def image_exists(self, tag: str) -> bool:
        try:
            _call(f"inspect image {tag}", lambda: self.client.api.inspect_image(tag))
        except docker.errors.NotFound:
            return False
        return True
