"""Reconcile the shared edge: its network, volume, service and routes."""

from __future__ import annotations

import json
import logging
from typing import Any

from hafen.catalog import get_app
from hafen.config import Settings
from hafen.edge import config as caddy
from hafen.edge.client import Edge
from hafen.engine.base import Engine, Mount, NetworkRef, Observation, PublishedPort, ServiceSpec
from hafen.errors import EngineError
from hafen.instances import naming
from hafen.instances.models import Desired, Instance

log = logging.getLogger("hafen.edge")

EDGE_IMAGE = "hafen/edge:caddy"


def route_for(instance: Instance, prefix: str) -> caddy.Route | None:
    """How the edge should treat an instance's domain, from desired and observed state."""
    scaled_to_zero = instance.desired_state == Desired.RUNNING and instance.replicas == 0
    if instance.desired_state == Desired.STOPPED or scaled_to_zero:
        return caddy.Route(instance.domain, instance.name, "stopped")
    if instance.desired_state != Desired.RUNNING:
        return None
    app = get_app(instance.app)
    web = instance.observed.get("services", {}).get(app.web_service, {})
    if web.get("running", 0) > 0:
        upstream = f"{naming.service(prefix, instance.name, app.web_service)}:{app.web_port}"
        return caddy.Route(instance.domain, instance.name, "proxy", upstream)
    return caddy.Route(instance.domain, instance.name, "starting")


def edge_spec(settings: Settings) -> ServiceSpec:
    return ServiceSpec(
        name=naming.edge_service(settings.prefix),
        image=EDGE_IMAGE,
        labels={**naming.labels(settings.prefix), "hafen.role": "edge"},
        mounts=[
            Mount(str(settings.edge_dir), "/etc/hafen-edge", kind="bind"),
            Mount(naming.edge_volume(settings.prefix), "/data"),
        ],
        networks=[
            NetworkRef(naming.edge_network(settings.prefix)),
            NetworkRef(naming.edge_public_network(settings.prefix)),
        ],
        ports=[PublishedPort(80, settings.http_port), PublishedPort(443, settings.https_port)],
        constraints=["node.role == manager"],
        memory_bytes=256 * 1024**2,
    )


class EdgeReconciler:
    def __init__(self, engine: Engine, edge: Edge, settings: Settings) -> None:
        self.engine = engine
        self.edge = edge
        self.settings = settings
        self.applied = ""
        self.routes: dict[str, caddy.Route] = {}
        self.problem = ""

    def ensure_infrastructure(self, obs: Observation) -> bool:
        """The edge network, volume and service; return whether the proxy runs."""
        prefix = self.settings.prefix
        # The shared edge network is internal: a web service on it gets no route off the host,
        # so it can reach only its own instance's network and the proxy.
        if naming.edge_network(prefix) not in obs.networks:
            self.engine.create_network(naming.edge_network(prefix), naming.labels(prefix), internal=True)
        if naming.edge_public_network(prefix) not in obs.networks:
            self.engine.create_network(naming.edge_public_network(prefix), naming.labels(prefix), internal=False)
        if naming.edge_volume(prefix) not in obs.volumes:
            self.engine.create_volume(naming.edge_volume(prefix), naming.labels(prefix))
        config_file = self.settings.edge_dir / "caddy.json"
        if not config_file.exists():
            self._write(caddy.build([], self.settings.acme_email))
        spec = edge_spec(self.settings)
        current = obs.services.get(spec.name)
        self.engine.apply_service(spec, current)
        if current is None or current.running == 0:
            failures = current.failures if current else []
            self.problem = f"the edge proxy is not running: {failures[-1].error}" if failures else (
                "the edge proxy is starting")
            return False
        return True

    def _write(self, config: dict[str, Any]) -> None:
        self.settings.edge_dir.mkdir(parents=True, exist_ok=True)
        path = self.settings.edge_dir / "caddy.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=1))
        tmp.replace(path)

    def reconcile(self, obs: Observation, instances: list[Instance]) -> None:
        try:
            if not self.ensure_infrastructure(obs):
                return
            routes = [r for r in (route_for(i, self.settings.prefix) for i in instances) if r is not None]
            config = caddy.build(routes, self.settings.acme_email)
            wanted = caddy.digest(config)
            if wanted == self.applied:
                return
            self._write(config)
            self.edge.load(config)
        except EngineError as exc:
            if str(exc) != self.problem:
                log.warning("edge: %s", exc)
            self.problem = str(exc)
            return
        self.applied = wanted
        self.routes = {r.domain: r for r in routes}
        self.problem = ""
        log.info("edge: configuration %s applied with %d routes", wanted, len(routes))

    def mode(self, domain: str) -> str | None:
        route = self.routes.get(domain)
        return route.mode if route else None
