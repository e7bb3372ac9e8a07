"""Talking to the edge: load a configuration into one of its servers, probe a domain through it."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

import httpx

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


class CaddyEdge(Edge):
    def __init__(self, edge_dir: Path, http_port: int) -> None:
        self.sockets = {"proxy": edge_dir / "admin.sock", "status": edge_dir / "status-admin.sock"}
        self.http_port = http_port

    def load(self, server: Server, config: dict[str, Any]) -> None:
        socket = self.sockets[server]
        if not socket.exists():
            raise EngineError(f"the edge {server} server is not up yet (no admin socket)")
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=10) as client:
                response = client.post("http://localhost/load", content=json.dumps(config),
                                       headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise EngineError(f"the edge {server} server did not take its configuration: {exc}") from exc
        if response.status_code != 200:
            raise EngineError(f"the edge {server} server refused its configuration: {response.text.strip()[:300]}")

    def probe(self, domain: str, path: str) -> int:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.http_port}{path}", headers={"Host": domain}, timeout=5)
        except httpx.HTTPError:
            return 0
        return response.status_code


class FakeEdge(Edge):
    """Records what it was given; answers as the real edge would, from the fake engine's services."""

    def __init__(self, engine: FakeEngine | None = None) -> None:
        self.engine = engine
        self.configs: dict[str, dict[str, Any]] = {}
        self.loads = 0

    @property
    def config(self) -> dict[str, Any]:
        return self.configs.get("status", {})

    def load(self, server: Server, config: dict[str, Any]) -> None:
        self.configs[server] = config
        self.loads += 1

    def _serving(self, domain: str) -> bool:
        """Whether a running web service answers to this domain on the edge network."""
        engine = self.engine
        if engine is None:
            return False
        return any(
            any(domain in net.aliases for net in spec.networks) and engine.state_of(spec).running > 0
            for spec in engine.services.values()
        )

    def probe(self, domain: str, path: str) -> int:
        if self._serving(domain):
            return 200
        routes = self.config.get("apps", {}).get("http", {}).get("servers", {}).get("status", {}).get("routes", [])
        for route in routes:
            if domain in route.get("match", [{}])[0].get("host", []):
                return int(route["handle"][0]["status_code"])
        return 404
