"""Talking to the edge proxy: load a configuration, probe a domain through it."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import httpx

from hafen.errors import EngineError


class Edge(ABC):
    @abstractmethod
    def load(self, config: dict[str, Any]) -> None:
        """Apply a whole configuration without restarting the proxy."""

    @abstractmethod
    def probe(self, domain: str, path: str) -> int:
        """The HTTP status the proxy answers for a path on a domain (0: no answer)."""


class CaddyEdge(Edge):
    def __init__(self, socket: Path, http_port: int) -> None:
        self.socket = socket
        self.http_port = http_port

    def load(self, config: dict[str, Any]) -> None:
        if not self.socket.exists():
            raise EngineError("the edge proxy is not up yet (no admin socket)")
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), timeout=10) as client:
                response = client.post("http://localhost/load", content=json.dumps(config),
                                       headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise EngineError(f"the edge proxy did not take its configuration: {exc}") from exc
        if response.status_code != 200:
            raise EngineError(f"the edge proxy refused its configuration: {response.text.strip()[:300]}")

    def probe(self, domain: str, path: str) -> int:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.http_port}{path}", headers={"Host": domain}, timeout=5)
        except httpx.HTTPError:
            return 0
        return response.status_code


class FakeEdge(Edge):
    """Records what it was given; answers 200 for proxied domains."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.loads = 0

    def load(self, config: dict[str, Any]) -> None:
        self.config = config
        self.loads += 1

    def probe(self, domain: str, path: str) -> int:
        routes = self.config.get("apps", {}).get("http", {}).get("servers", {}).get("http", {}).get("routes", [])
        for route in routes:
            if domain in route.get("match", [{}])[0].get("host", []):
                return 200 if route["handle"][0]["handler"] == "reverse_proxy" else 503
        return 404
