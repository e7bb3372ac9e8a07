"""The edge proxy connects only to the web service of an instance whose domain the Host is.

Listeners wait on port 8000 (the port the proxy dials) where a proxy that dialled whatever
Host it was sent would reach: on the host's gateway addresses and in a non-hafen service's
container on the shared edge network. Hostile Host values must get the 404 page, and no
listener a connection.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest

from tests.conftest import PREFIX, Plane

pytestmark = pytest.mark.integration

LISTENER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 8000)); s.listen(64)\n"
    "print('listening', flush=True)\n"
    "while True:\n"
    "    c, peer = s.accept()\n"
    "    print('connection from', peer[0], flush=True)\n"
    "    c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 8\\r\\n\\r\\nlistener'); c.close()\n"
)


@dataclass
class HostListener:
    """Accepts on address:8000 on the host and records who connected."""

    address: str
    peers: list[str] = field(default_factory=list)
    sock: socket.socket = field(default_factory=socket.socket)

    def start(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.address, 8000))
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            with contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nlistener")
            conn.close()


@dataclass
class Scene:
    running: str
    stopped: str
    erased: str
    gateways: list[HostListener]
    container: Any

    def container_connections(self) -> list[str]:
        logs = self.container.logs().decode(errors="replace")
        return [line for line in logs.splitlines()
                if line.startswith("connection from") and line != "connection from 127.0.0.1"]


def _gateways(plane: Plane) -> list[str]:
    """The host's addresses on the bridges a container reaches the host by (docker_gwbridge, docker0)."""
    found = []
    for name in ("docker_gwbridge", "bridge"):
        with contextlib.suppress(Exception):
            for config in plane.docker.networks.get(name).attrs["IPAM"]["Config"] or []:
                if config.get("Gateway"):
                    found.append(config["Gateway"])
    return found


@pytest.fixture(scope="module")
def scene(plane: Plane) -> Iterator[Scene]:
    running, stopped, erased = "eh-run", "eh-halt", "eh-gone"
    for name in (running, stopped, erased):
        plane.create(name, "demo")
    plane.hafen("stop", stopped)
    plane.hafen("erase", erased, "--yes")

    gateways = [HostListener(address) for address in _gateways(plane)]
    assert gateways, "no docker_gwbridge or bridge gateway found"
    for listener in gateways:
        listener.start()
    # Not hafen's: no hafen.role label (the prefix label only so that the tests' cleanup removes it).
    # A service rather than a container connected by hand: the swarm now and then leaks such a
    # container's attachment (moby/moby#31068), and the network could never be removed again.
    service = plane.docker.services.create(
        "hafen/demo:1.0", ["python3", "-u", "-c", LISTENER], name=f"{PREFIX}-eh-listener",
        networks=[f"{PREFIX}-edge"], labels={"hafen.prefix": PREFIX}, container_labels={"hafen.prefix": PREFIX},
        endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
        healthcheck=docker.types.Healthcheck(test=["NONE"]),  # the demo image's check connects from 127.0.0.1
    )
    try:
        container = plane.wait_until(lambda: plane.containers(f"{PREFIX}-eh-listener"), timeout=120)[0]
        plane.wait_until(lambda: b"listening" in container.logs(), timeout=30)
        yield Scene(running, stopped, erased, gateways, container)
    finally:
        for listener in gateways:
            listener.sock.close()
        service.remove()
        plane.hafen("erase", running, "--yes", check=False)
        plane.hafen("erase", stopped, "--yes", check=False)


def _load_proxy(plane: Plane, config: dict[str, Any]) -> None:
    import httpx

    from hafen.edge.client import admin_sockets

    transport = httpx.HTTPTransport(uds=str(admin_sockets(plane.data_dir / "edge", "proxy")[0]))
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.post("http://localhost/load", json=config)
    assert response.status_code == 200, response.text


def test_listeners_would_see_a_proxy_that_dials_any_host(plane: Plane, scene: Scene) -> None:
    """The listeners are where such a proxy connects: the proxy as it was before (upstream
    `{host}`, no guard) reaches both. The real configuration is loaded again afterwards."""
    real = json.loads((plane.data_dir / "edge" / "caddy.json").read_text())
    leaky = json.loads(json.dumps(real))
    for server in leaky["apps"]["http"]["servers"].values():
        route = next(r for r in server["routes"] if "dynamic_upstreams" in r["handle"][0])
        route.pop("match")
        route["handle"][0]["dynamic_upstreams"]["name"] = "{http.request.host}"
    _load_proxy(plane, leaky)
    try:
        before = len(scene.container_connections())
        for host in (f"{PREFIX}-eh-listener", scene.gateways[0].address):
            response = plane.http(host).get("/")
            assert (response.status_code, response.text) == (200, "listener"), host
        assert len(scene.container_connections()) == before + 1
        assert scene.gateways[0].peers
    finally:
        _load_proxy(plane, real)
    for listener in scene.gateways:
        listener.peers.clear()


def test_hostile_hosts_get_the_404_page_and_open_no_connection(plane: Plane, scene: Scene) -> None:
    before = len(scene.container_connections())
    name = scene.running
    listener_name = scene.container.name
    listener_ip = scene.container.attrs["NetworkSettings"]["Networks"][f"{PREFIX}-edge"]["IPAddress"]
    gateways = [g.address for g in scene.gateways]
    hostile = [
        f"{PREFIX}-edge-status", f"{PREFIX}-edge", f"{PREFIX}-{name}_web", f"{name}_web", "web", "db", "redis",
        f"{PREFIX}-{name}_db", f"tasks.{PREFIX}-{name}_web", listener_name, f"{listener_name}:8000",
        f"{listener_name}.{PREFIX}-edge",  # Docker's DNS answers name.NETWORK
        f"{PREFIX}-eh-listener", f"{PREFIX}-eh-listener.{PREFIX}-edge", f"tasks.{PREFIX}-eh-listener",
        f"{listener_name}.localhost", listener_ip, *gateways, *(f"{g}:8000" for g in gateways),
        "127.0.0.1", "127.0.0.1:8000", "[::1]", "[::1]:8000", "::1", "::ffff:127.0.0.1", "[::ffff:127.0.0.1]",
        "0x7f000001", "2130706433", "127.1", "localhost", "LOCALHOST", "localhost:8000",
        # a running instance's domain in mixed case or with a trailing dot: not what a browser sends
        f"{name.title()}.localhost", f"{name}.LOCALHOST", f"{name}.localhost.",
        f"{name}.localhost.{PREFIX}-route",  # the web service's alias itself
        f"{scene.erased}.localhost",
        "",
    ]
    answers = {}
    for host in hostile:
        with plane.http(host) as client:
            response = client.get("/")
        answers[host] = response.status_code
        if response.status_code == 404:
            assert "No such instance" in response.text, host
    assert {h: s for h, s in answers.items() if s != 404} == {}
    # a stopped instance: the status server's page that says so (the proxy dialled no listener either)
    stopped = plane.http(f"{scene.stopped}.localhost").get("/")
    assert stopped.status_code == 503 and "stopped" in stopped.text

    time.sleep(2)
    assert [g.peers for g in scene.gateways] == [[] for _ in scene.gateways]
    assert len(scene.container_connections()) == before


def test_a_running_instances_domain_still_answers(plane: Plane, scene: Scene) -> None:
    domain = f"{scene.running}.localhost"
    assert plane.http(domain).get("/health").status_code == 200
    # the port a client sends is not part of the domain: a browser sends it for a non-default port
    assert plane.http(f"{domain}:8000").get("/health").status_code == 200
