"""The simulated cluster itself: it forms, its overlay networks carry DNS and HTTP across nodes, a drain
moves tasks. No hafen here: what hafen's tests on several nodes stand on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import docker.types as dt
import httpx
import pytest

from tests.conftest import wait_until
from tests.multinode.cluster import Cluster, Node

pytestmark = pytest.mark.multinode

IMAGE = "hafen/demo:1.0"  # has python3; its http.server answers with a page that names the node it runs on
PORT = 27100


def web_service(cluster: Cluster, name: str, network: str, node: Node | None = None,
                published: int | None = None) -> Any:
    """A web server whose page names its node (`{{.Node.Hostname}}`, a template of the swarm); its /health
    answers 200, for the image's health check (swarm counts a task as running once it is healthy)."""
    script = ('mkdir -p /tmp/www && echo "served by $NODE" > /tmp/www/index.html && echo ok > /tmp/www/health '
              '&& cd /tmp/www && exec python3 -m http.server 8000')
    ports = [{"Protocol": "tcp", "TargetPort": 8000, "PublishedPort": published, "PublishMode": "host"}]
    return cluster.manager.client.services.create(
        IMAGE, name=name, command=["sh", "-c", script], env=["NODE={{.Node.Hostname}}"],
        networks=[network], constraints=[f"node.hostname == {node.name}"] if node else None,
        endpoint_spec=dt.EndpointSpec(mode="dnsrr", ports=ports if published else None),  # type: ignore[arg-type]
        labels={"hmn.test": "1"}, init=True, stop_grace_period=2_000_000_000,
    )


def running_on(cluster: Cluster, service: str) -> set[str]:
    """Hostnames of the nodes where the service's tasks run."""
    api = cluster.manager.client.api
    names = {n["ID"]: n["Description"]["Hostname"] for n in api.nodes()}
    return {
        names.get(t.get("NodeID", ""), "?")
        for t in api.tasks(filters={"service": service, "desired-state": "running"})
        if t["Status"]["State"] == "running"
    }


def container_of(node: Node, service: str) -> Any:
    found = node.client.containers.list(filters={"label": f"com.docker.swarm.service.name={service}"})
    return found[0] if found else None


@pytest.fixture
def overlay(cluster: Cluster) -> Iterator[str]:
    name = "hmn-test-net"
    client = cluster.manager.client
    client.networks.create(name, driver="overlay", attachable=True, scope="swarm", labels={"hmn.test": "1"})
    try:
        yield name
    finally:
        for service in client.services.list(filters={"label": "hmn.test=1"}):
            with contextlib.suppress(Exception):
                service.remove()
        # the network goes once no task holds it any more (tasks on the workers stop asynchronously)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: _removed(client, name), timeout=30)


def _removed(client: Any, name: str) -> bool:
    try:
        client.networks.get(name).remove()
    except Exception as exc:
        return "not found" in str(exc).lower() or "404" in str(exc)
    return True


def test_cluster_forms(cluster: Cluster) -> None:
    nodes = cluster.manager.client.api.nodes()
    assert len(nodes) == 3
    assert {n["Description"]["Hostname"] for n in nodes} == {"hmn-node1", "hmn-node2", "hmn-node3"}
    assert all(n["Status"]["State"] == "ready" for n in nodes)
    managers = [n for n in nodes if n["Spec"]["Role"] == "manager"]
    assert [m["Description"]["Hostname"] for m in managers] == ["hmn-node1"]
    assert managers[0]["ManagerStatus"]["Leader"] is True
    # each node advertises its own address, and the swarm takes its subnets from its own pool
    assert {n["Status"]["Addr"] for n in nodes} == {node.address for node in cluster.nodes}
    assert cluster.manager.client.info()["Swarm"]["Cluster"]["DefaultAddrPool"] == ["10.213.0.0/16"]
    for node in cluster.nodes:
        assert node.client.images.get(IMAGE)


def test_overlay_dns_and_http_across_nodes(cluster: Cluster, overlay: str) -> None:
    node2, node3 = cluster.node(2), cluster.node(3)
    web_service(cluster, "hmn-t-two", overlay, node2, published=PORT)
    web_service(cluster, "hmn-t-three", overlay, node3)
    wait_until(lambda: running_on(cluster, "hmn-t-two") == {"hmn-node2"}, timeout=60)
    wait_until(lambda: running_on(cluster, "hmn-t-three") == {"hmn-node3"}, timeout=60)

    # From the host, at node 2's address: its published port (host mode) speaks HTTP.
    def page() -> str:
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"http://{node2.address}:{PORT}/", timeout=5)
            return response.text if response.status_code == 200 else ""
        return ""

    assert wait_until(page, timeout=30).strip() == "served by hmn-node2"

    # From a task on one node to a service on the other, by the service's name (the swarm's DNS, dnsrr).
    fetch = ("import sys, urllib.request; "
             "print(urllib.request.urlopen(f'http://{sys.argv[1]}:8000/', timeout=5).read().decode().strip())")

    def across(node: Node, service: str, target: str) -> str:
        container = container_of(node, service)
        if container is None:
            return ""
        code, output = container.exec_run(["python3", "-c", fetch, target])
        return output.decode().strip() if code == 0 else ""

    assert wait_until(lambda: across(node3, "hmn-t-three", "hmn-t-two"), timeout=30) == "served by hmn-node2"
    assert wait_until(lambda: across(node2, "hmn-t-two", "hmn-t-three"), timeout=30) == "served by hmn-node3"


def test_drain_moves_a_task(cluster: Cluster, overlay: str) -> None:
    web_service(cluster, "hmn-t-drain", overlay)
    first = wait_until(lambda: running_on(cluster, "hmn-t-drain"), timeout=60)
    assert len(first) == 1
    drained = cluster.node(next(iter(first)))
    cluster.set_availability(drained, "drain")
    try:
        moved = wait_until(
            lambda: (lambda now: now if now and drained.name not in now else None)(running_on(cluster, "hmn-t-drain")),
            timeout=60,
        )
        assert len(moved) == 1 and drained.name not in moved
        # and nothing of it is left on the drained node
        wait_until(lambda: container_of(drained, "hmn-t-drain") is None, timeout=30)
    finally:
        cluster.set_availability(drained, "active")
