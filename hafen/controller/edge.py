"""Reconcile the shared edge: its networks, volume, two Caddy services and their configurations,
and the proxy's attachments to the instances' edge networks."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from hafen.catalog import get_app
from hafen.config import Settings
from hafen.edge import config as caddy
from hafen.edge.client import Edge, Server
from hafen.engine.base import (
    LABEL_ROLE,
    ROLE_EDGE,
    Engine,
    Mount,
    NetworkRef,
    Observation,
    PublishedPort,
    ServiceSpec,
)
from hafen.errors import EngineError
from hafen.instances import naming
from hafen.instances import policy as elastic_policy
from hafen.instances.models import Desired, Instance, State

log = logging.getLogger("hafen.edge")

EDGE_IMAGE = "hafen/edge:caddy"
AGENT_IMAGE = "hafen/edge-agent:1"
# The node label that asks for an edge proxy on a node (the controller's node has one anyway).
EDGE_LABEL = "edge"
CONFIG_FILES: dict[Server, str] = {"proxy": "caddy.json", "status": "status.json"}
# Connecting a container to a network takes a fraction of a second; a pass that has many to
# connect (a new proxy container, many new instances) does the rest on the next passes.
ATTACH_BUDGET = 2.0


def route_for(instance: Instance) -> caddy.Route | None:
    """What the status server says of an instance's domain when no web service answers for it."""
    scaled_to_zero = instance.desired_state == Desired.RUNNING and instance.replicas == 0
    if instance.desired_state == Desired.STOPPED or scaled_to_zero:
        return caddy.Route(instance.domain, instance.name, "stopped")
    if instance.desired_state == Desired.RUNNING:
        mode: caddy.Mode = "starting"
        if instance.notice == "updating":
            mode = "updating"
        elif instance.sleep or instance.state in (State.SLEEPING, State.WAKING):
            mode = "waking"  # the request that sees this page wakes it (see controller/elastic.py)
        return caddy.Route(instance.domain, instance.name, mode)
    return None


def _spec(settings: Settings, server: Server, node: str = "") -> ServiceSpec:
    """The proxy publishes the ports and keeps certificates; the status server has neither.

    Both run on the controller's own node, where the configuration directory they mount is. The
    proxy is a plain container there, not a swarm task: Docker attaches a running task's container
    only to an overlay network that a task on its node already uses, and gives it an address of its
    own choosing, which another task may get too; a container attached at run time gets an address
    from the swarm and reaches web tasks on every node."""
    prefix = settings.prefix
    bind = Mount(str(settings.edge_dir), "/etc/hafen-edge", kind="bind")
    common: dict[str, Any] = {"image": EDGE_IMAGE,
                              "constraints": [f"node.id == {node}"] if node else ["node.role == manager"]}
    if server == "status":
        return ServiceSpec(
            name=naming.edge_status_service(prefix),
            labels={**naming.labels(prefix), LABEL_ROLE: f"{ROLE_EDGE}-status"},
            command=["caddy", "run", "--config", "/etc/hafen-edge/status.json"],
            mounts=[bind],
            networks=[NetworkRef(naming.edge_network(prefix))],
            memory_bytes=64 * 1024**2,
            **common,
        )
    return ServiceSpec(
        name=naming.edge_service(prefix),
        labels={**naming.labels(prefix), LABEL_ROLE: ROLE_EDGE},
        mounts=[bind, Mount(naming.edge_volume(prefix), "/data")],
        # the default bridge (joined first) publishes the ports and gives a way out (ACME)
        networks=[NetworkRef(naming.edge_network(prefix))],
        ports=[PublishedPort(80, settings.http_port), PublishedPort(443, settings.https_port)],
        memory_bytes=256 * 1024**2,
        image=EDGE_IMAGE,
    )


def edge_spec(settings: Settings) -> ServiceSpec:
    return _spec(settings, "proxy")


class EdgeReconciler:
    def __init__(self, engine: Engine, edge: Edge, settings: Settings) -> None:
        self.engine = engine
        self.edge = edge
        self.settings = settings
        self.applied: dict[Server, str] = {}
        self.routes: dict[str, caddy.Route] = {}
        self.problem = ""

    def _configs(self, instances: list[Instance]) -> tuple[dict[Server, dict[str, Any]], list[caddy.Route]]:
        routes = [r for r in (route_for(i) for i in instances) if r is not None]
        status_host = naming.edge_status_service(self.settings.prefix)
        return {
            "proxy": caddy.proxy_config(status_host, naming.route_suffix(self.settings.prefix),
                                        self.settings.acme_email),
            "status": caddy.build(routes, [i.domain for i in instances
                                           if i.desired_state == Desired.RUNNING and i.sleep]),
        }, routes

    def _write(self, server: Server, config: dict[str, Any]) -> None:
        self.settings.edge_dir.mkdir(parents=True, exist_ok=True)
        path = self.settings.edge_dir / CONFIG_FILES[server]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=1))
        tmp.replace(path)

    def _ensure_infrastructure(self, obs: Observation, configs: dict[Server, dict[str, Any]]) -> list[Server]:
        """Networks, volume and both services; return the servers that run."""
        prefix = self.settings.prefix
        # The shared edge network is internal: a web service on it gets no route off the host,
        # so it can reach only its own instance's network and the edge.
        if naming.edge_network(prefix) not in obs.networks:
            self.engine.create_network(naming.edge_network(prefix), naming.labels(prefix), internal=True)
        if naming.edge_volume(prefix) not in obs.volumes:
            self.engine.create_volume(naming.edge_volume(prefix), naming.labels(prefix))
        running: list[Server] = []
        problems = []
        for server in ("status", "proxy"):
            if not (self.settings.edge_dir / CONFIG_FILES[server]).exists():
                self._write(server, configs[server])
            spec = _spec(self.settings, server, obs.local_node)
            if server == "proxy":
                if self._proxy(obs, spec):
                    running.append(server)
                else:
                    problems.append("the edge proxy is not running yet")
                continue
            current = obs.services.get(spec.name)
            self.engine.apply_service(spec, current)
            if current is not None and current.running > 0:
                running.append(server)
            else:
                failures = current.failures if current else []
                problems.append(f"the edge {server} server is not running"
                                + (f": {failures[-1].error}" if failures else " yet"))
        self.problem = "; ".join(problems)
        return running

    def _proxy(self, obs: Observation, spec: ServiceSpec) -> bool:
        """The proxy's container; an older hafen's proxy service goes first (it holds the ports)."""
        if spec.name in obs.services:
            log.info("edge: replacing the proxy service of an older hafen by a container")
            self.engine.remove_service(spec.name)
            return False
        if any(cid for cid in obs.edge_containers if spec.name not in obs.containers
               or obs.containers[spec.name].id != cid):
            return False  # the old service's container is still going
        current = obs.containers.get(spec.name)
        changed = self.engine.apply_container(spec, current)
        return current is not None and current.running and not changed

    @staticmethod
    def _answers(instance: Instance) -> bool:
        """Whether the instance's web service should answer now (the proxy may be attached): not
        while its data is being replaced (the status server's "starting" page answers then)."""
        route = route_for(instance)
        return route is not None and route.mode != "stopped" and not instance.maintenance

    def _should_attach(self, obs: Observation, instance: Instance) -> bool:
        """Whether the proxy should be on the instance's edge network now: the web should answer
        and has a task that runs. (Docker attaches a service's container only to a network that
        a task on its node uses already: before the web runs, there is nothing to attach to.)"""
        if not self._answers(instance):
            return False
        web = obs.services_of(instance.name).get(get_app(instance.app).web_service)
        return web is not None and any(t.state == "running" for t in web.tasks)

    def _attach(self, obs: Observation, instances: list[Instance]) -> list[str]:
        """Attach the proxy's containers to the edge network of every instance whose web runs;
        detach them from those of instances that stop, go or are gone. At run time, so the proxy
        never restarts. Return the problems met.

        The proxy must be off a network before the web's last task on the node goes: the node
        removes its copy of the network with that task, and cannot while the proxy is on it;
        once the swarm removes the network (erase), such a copy stays, unusable and unremovable.
        So stop, delete and erase detach first (see `routed`)."""
        prefix = self.settings.prefix
        wanted = {
            naming.instance_edge_network(prefix, i.name) for i in instances if self._should_attach(obs, i)
        } & obs.networks
        keep = {naming.instance_edge_network(prefix, i.name) for i in instances if self._answers(i)}
        problems: list[str] = []
        deadline = time.monotonic() + ATTACH_BUDGET
        for container, networks in sorted(obs.edge_containers.items()):
            for network in sorted(n for n in networks - keep if naming.is_instance_edge_network(prefix, n)):
                try:
                    self.engine.disconnect_container(network, container)
                except EngineError as exc:
                    problems.append(str(exc))
                    continue
                log.info("edge: proxy %s detached from %s", container[:12], network)
            for network in sorted(wanted - networks):
                if time.monotonic() > deadline:
                    break
                started = time.monotonic()
                try:
                    self.engine.connect_container(network, container)
                except EngineError as exc:
                    problems.append(str(exc))
                    continue
                log.info("edge: proxy %s attached to %s in %.3fs", container[:12], network, time.monotonic() - started)
        return problems

    def _agent_spec(self, obs: Observation, proxy_config: dict[str, Any], instances: list[Instance]) -> ServiceSpec:
        """The edge agents: one on every node but the controller's, keeping a proxy there (see
        hafen/edge/agent/hafen-edge-agent) on the nodes labelled for the edge, attached to the edge network
        of every instance that should answer. A change here restarts the agents, not their proxies."""
        prefix = self.settings.prefix
        networks = sorted({naming.instance_edge_network(prefix, i.name) for i in instances if self._answers(i)}
                          & obs.networks)
        edge_nodes = sorted(n.id for n in obs.nodes.values()
                            if n.labels.get(EDGE_LABEL) == "true" and n.id != obs.local_node)
        labels = {**naming.labels(prefix), LABEL_ROLE: ROLE_EDGE}
        return ServiceSpec(
            name=naming.edge_agent_service(prefix),
            image=self.engine.image_ref(AGENT_IMAGE),
            labels={**naming.labels(prefix), LABEL_ROLE: f"{ROLE_EDGE}-agent"},
            env={
                "HAFEN_NODE_ID": "{{.Node.ID}}",
                "HAFEN_EDGE_NODES": ",".join(edge_nodes),
                "HAFEN_EDGE_NAME": naming.edge_service(prefix),
                "HAFEN_EDGE_IMAGE": self.engine.image_ref(EDGE_IMAGE),
                "HAFEN_EDGE_CONFIG": json.dumps(proxy_config, indent=1),
                "HAFEN_EDGE_PORTS": json.dumps({"80": self.settings.http_port, "443": self.settings.https_port}),
                "HAFEN_EDGE_SHARED": naming.edge_network(prefix),
                "HAFEN_EDGE_ASLEEP_URL": f"http://{naming.edge_status_service(prefix)}:{caddy.STATUS_PORT}"
                                         f"{caddy.ASLEEP_PATH}",
                "HAFEN_EDGE_ASLEEP_HOST": caddy.ASLEEP_HOST,
                "HAFEN_EDGE_NETWORKS": ",".join(networks),
                "HAFEN_EDGE_LABELS": json.dumps(labels),
                "HAFEN_EDGE_VOLUMES": json.dumps({"conf": naming.edge_agent_volume(prefix),
                                                  "data": naming.edge_volume(prefix)}),
            },
            mounts=[Mount(self.settings.node_docker_socket, "/var/run/docker.sock", kind="bind"),
                    Mount(naming.edge_agent_volume(prefix), "/etc/hafen-edge",
                          labels=tuple(sorted(naming.labels(prefix).items())))],
            networks=[NetworkRef(naming.edge_network(prefix))],  # (to read the sleepers from the status server)
            constraints=[f"node.id != {obs.local_node}"],
            global_mode=True,
            memory_bytes=64 * 1024**2,
        )

    def _mark_asleep(self, instances: list[Instance]) -> None:
        """One empty file per domain of a sleeping instance, which the proxy checks (see caddy.proxy_config);
        and one in the folder of its hold step for a sleeping or waking one whose policy holds requests."""
        running = [i for i in instances if i.desired_state == Desired.RUNNING]
        folders = {self.settings.edge_dir / caddy.ASLEEP_DIR: {i.domain for i in running if i.sleep}}
        holding = {i.domain: hold for i in running if i.sleep or i.state == State.WAKING
                   for hold in [elastic_policy.effective(i, self.settings).hold] if hold}
        for step in caddy.HOLD_STEPS:
            folder = self.settings.edge_dir / caddy.HOLD_DIR / str(step)
            folders[folder] = {domain for domain, hold in holding.items() if hold == step}
        for folder, wanted in folders.items():
            folder.mkdir(parents=True, exist_ok=True)
            present = {path.name for path in folder.iterdir()}
            for domain in present - wanted:
                (folder / domain).unlink(missing_ok=True)
            for domain in wanted - present:
                (folder / domain).touch()

    def reconcile(self, obs: Observation, instances: list[Instance]) -> None:
        configs, routes = self._configs(instances)
        self._mark_asleep(instances)
        try:
            running = self._ensure_infrastructure(obs, configs)
            if len(obs.nodes) > 1 or naming.edge_agent_service(self.settings.prefix) in obs.services:
                agent = self._agent_spec(obs, configs["proxy"], instances)
                self.engine.apply_service(agent, obs.services.get(agent.name))
            problems = self._attach(obs, instances)
            if problems:
                self.problem = "; ".join([self.problem, *problems] if self.problem else problems)
            for server in running:
                wanted = caddy.digest(configs[server])
                if self.applied.get(server) == wanted:
                    continue
                self._write(server, configs[server])
                self.edge.load(server, configs[server])
                self.applied[server] = wanted
                log.info("edge: %s configuration %s applied", server, wanted)
                if server == "status":
                    self.routes = {r.domain: r for r in routes}
        except EngineError as exc:
            if str(exc) != self.problem:
                log.warning("edge: %s", exc)
            self.problem = str(exc)

    def mode(self, domain: str) -> str | None:
        route = self.routes.get(domain)
        return route.mode if route else None

    def routed(self, instance: Instance, obs: Observation) -> bool:
        """Whether the edge has what the instance should now have, as observed: the status
        server its page; the proxy attached to its edge network once its web runs, and
        detached from it when it should not answer (before its web service stops)."""
        wanted = route_for(instance)
        if self.mode(instance.domain) != (wanted.mode if wanted else None):
            return False
        network = naming.instance_edge_network(self.settings.prefix, instance.name)
        attached = [network in networks for networks in obs.edge_containers.values()]
        if self._should_attach(obs, instance):
            return bool(attached) and all(attached)
        if not self._answers(instance):
            return not any(attached)
        return True
