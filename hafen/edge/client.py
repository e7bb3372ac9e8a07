"""Talking to the edge: load a configuration into one of its servers, probe a domain through it."""

from __future__ import annotations

import contextlib
import json
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

import httpx

from hafen.edge.config import SOCKET_GLOBS
from hafen.engine.base import LABEL_PREFIX
from hafen.engine.fake import FakeEngine
from hafen.errors import EngineError

Server = Literal["proxy", "status"]


class Edge(ABC):
    @abstractmethod
    def load(self, server: Server, config: dict[str, Any]) -> None:
        """Apply a whole configuration to one server without restarting it."""

    @abstractmethod
    def probe(self, domain: str, path: str) -> int:
        """The HTTP status the proxy answers for a path on a domain (0: no answer)."""

    @abstractmethod
    def in_flight(self) -> dict[str, int] | None:
        """The requests the proxy has open now (websockets included), by upstream address ("ip:port");
        None when the proxy does not answer."""


def admin_sockets(edge_dir: Path, server: Server) -> list[Path]:
    """The server's admin sockets in the edge directory, newest first (one per container that ran)."""
    found = []
    for pattern in SOCKET_GLOBS[server]:
        for path in edge_dir.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                found.append((path.stat().st_mtime, path))
    return [path for _, path in sorted(found, reverse=True)]


class CaddyEdge(Edge):
    def __init__(self, edge_dir: Path, http_port: int) -> None:
        self.edge_dir = edge_dir
        self.http_port = http_port

    def load(self, server: Server, config: dict[str, Any]) -> None:
        """Through the newest admin socket that answers; a socket nobody listens on (its container
        was killed) is removed."""
        sockets = admin_sockets(self.edge_dir, server)
        if not sockets:
            raise EngineError(f"the edge {server} server is not up yet (no admin socket)")
        for socket in sockets:
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=10) as client:
                    response = client.post("http://localhost/load", content=json.dumps(config),
                                           headers={"Content-Type": "application/json"})
            except httpx.ConnectError:
                socket.unlink(missing_ok=True)
                continue
            except httpx.HTTPError as exc:
                raise EngineError(f"the edge {server} server did not take its configuration: {exc}") from exc
            if response.status_code != 200:
                raise EngineError(f"the edge {server} server refused its configuration: "
                                  f"{response.text.strip()[:300]}")
            return
        raise EngineError(f"the edge {server} server is not up yet (no admin socket answers)")

    def in_flight(self) -> dict[str, int] | None:
        for socket in admin_sockets(self.edge_dir, "proxy"):
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=5) as client:
                    response = client.get("http://localhost/reverse_proxy/upstreams")
                    response.raise_for_status()
                    return {entry["address"]: int(entry.get("num_requests", 0)) for entry in response.json()}
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
        return None

    def probe(self, domain: str, path: str) -> int:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.http_port}{path}", headers={"Host": domain}, timeout=5)
        except httpx.HTTPError:
            return 0
        return response.status_code


class FakeEdge(Edge):
    """Records what it was given; answers as the real edge would, from the loaded configurations and
    the fake engine's services and proxy containers."""

    def __init__(self, engine: FakeEngine | None = None) -> None:
        self.engine = engine
        self.configs: dict[str, dict[str, Any]] = {}
        self.loads = 0
        self.open_requests: dict[str, int] | None = {}  # what in_flight answers: set by a test

    @property
    def config(self) -> dict[str, Any]:
        return self.configs.get("status", {})

    def load(self, server: Server, config: dict[str, Any]) -> None:
        self.configs[server] = config
        self.loads += 1

    def in_flight(self) -> dict[str, int] | None:
        return None if self.open_requests is None else dict(self.open_requests)

    def _proxy_route(self) -> dict[str, Any]:
        routes: list[dict[str, Any]] = (
            self.configs.get("proxy", {}).get("apps", {}).get("http", {}).get("servers", {})
            .get("http", {}).get("routes", [])
        )
        return next((r for r in routes if "dynamic_upstreams" in r.get("handle", [{}])[0]), {})

    def _forwarded(self, domain: str) -> str | None:
        """The upstream name the proxy looks up for this host, or None if its guard refuses the host."""
        route = self._proxy_route()
        pattern = route.get("match", [{}])[0].get("vars_regexp", {}).get("{http.request.host}", {}).get("pattern")
        host = domain.rsplit(":", 1)[0] if not domain.endswith("]") else domain
        if pattern is None or not re.fullmatch(pattern, host):  # RE2: `$` is the end of the text
            return None
        template: str = route["handle"][0]["dynamic_upstreams"]["name"]
        return template.replace("{http.request.host}", host).rstrip(".")

    def _serving(self, name: str) -> bool:
        """Whether a running web service has this alias on a network the proxy is attached to."""
        engine = self.engine
        if engine is None:
            return False
        proxy_networks: set[str] = set()
        for prefix in {spec.labels.get(LABEL_PREFIX, "") for spec in engine.services.values()}:
            for networks in engine.edge_containers(prefix).values():
                proxy_networks |= networks
        return any(
            any(name in net.aliases and net.name in proxy_networks for net in spec.networks)
            and engine.state_of(spec).running > 0
            for spec in engine.services.values()
        )

    def probe(self, domain: str, path: str) -> int:
        if "proxy" not in self.configs:
            return 0
        name = self._forwarded(domain)
        if name is None:
            return 404
        if self._serving(name):
            return 200
        routes = self.config.get("apps", {}).get("http", {}).get("servers", {}).get("status", {}).get("routes", [])
        for route in routes:
            if domain in route.get("match", [{}])[0].get("host", []):
                return int(route["handle"][0]["status_code"])
        return 404
