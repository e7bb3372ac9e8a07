"""A first hafen on the three-node swarm: its control plane on the manager, a demo instance through the edge.

The control plane runs as on a real manager machine: in node 1's network namespace (`nsenter --net`), with
DOCKER_HOST at node 1's engine, its own data directory, prefix "hmn" and ports. The CLI runs there too.
The test then asks, from the host, the edge at the manager's address for the instance's domain.

Why on the manager and not beside the swarm (in the host's namespace, DOCKER_HOST at node 1): the edge
services bind-mount the control plane's data directory (their configuration and admin sockets) and a
create's last step asks the edge at http://127.0.0.1:HAFEN_HTTP_PORT; both hold only on the edge's node.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest
import requests

from hafen.images.build import plan
from tests.conftest import ARTIFACTS, Plane
from tests.multinode.cluster import RUN_DIR, Cluster, Node
from tests.multinode.conftest import built_here
from tests.openslides import add_motion, login, titles
from tests.probes import HTTP, POSTGRES, REDIS, ROUTES, run_in

pytestmark = pytest.mark.multinode

PREFIX = "hmn"
HTTP_PORT, HTTPS_PORT, WEB_PORT = 27080, 27443, 27765
REGISTRY_PORT = 27500


class NodePlane(Plane):
    """A control plane whose engine is a node of the cluster; run in a network namespace unless netns is None."""

    def __init__(self, data_dir: Path, node: Node, netns: str | None, prefix: str = PREFIX,
                 ports: tuple[int, int, int] = (HTTP_PORT, HTTPS_PORT, WEB_PORT),
                 registry_port: int = REGISTRY_PORT) -> None:
        super().__init__(data_dir)
        # the tests' catalogue (demo builds broken on purpose) is the single-node tiers'; the nodes are given
        # only the images of hafen's own catalogue
        self.env.pop("HAFEN_CATALOG_EXTRA", None)
        self.docker = node.client
        self.netns = netns
        self.prefix = prefix
        self.http_port = ports[0]
        self.env.update({
            "DOCKER_HOST": node.url,
            "HAFEN_PREFIX": prefix,
            "HAFEN_HTTP_PORT": str(ports[0]),
            "HAFEN_HTTPS_PORT": str(ports[1]),
            "HAFEN_WEB_PORT": str(ports[2]),
            "HAFEN_ADVERTISE_ADDR": node.address,
            "HAFEN_BACKUP_REPOSITORY": f"rest:http://{prefix}-backup-target:8000/hafen",
            "HAFEN_BACKUP_RETRIES": "1",
            "HAFEN_REGISTRY_PORT": str(registry_port),
            "HAFEN_MOVE_CONCURRENCY": "2",
            # each node's engine has its own socket here (the edge agents mount it)
            "HAFEN_NODE_DOCKER_SOCKET": str(RUN_DIR / "{{.Node.Hostname}}" / "docker.sock"),
        })

    def hafen(self, *args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "hafen", *args]
        if self.netns:
            command = ["nsenter", f"--net=/run/netns/{self.netns}", *command]
        result = subprocess.run(command, env={**self.env, **(env or {})}, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"hafen {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return result


@pytest.fixture(scope="module")
def hafen_images(cluster: Cluster) -> None:
    """`hafen up` builds what its engine lacks: the manager gets every image hafen plans (OpenSlides too)."""
    started = time.monotonic()
    cluster.load_images(built_here([job.tag for job in plan()]), [cluster.manager])
    cluster.measures["manager_all_images_s"] = round(time.monotonic() - started, 2)


@contextlib.contextmanager
def control_plane(cluster: Cluster, netns: str | None, prefix: str = PREFIX,
                  ports: tuple[int, int, int] = (HTTP_PORT, HTTPS_PORT, WEB_PORT)) -> Iterator[NodePlane]:
    data_dir = Path(tempfile.mkdtemp(prefix="hafen-mn-"))
    plane = NodePlane(data_dir, cluster.manager, netns, prefix, ports)
    started = time.monotonic()
    plane.hafen("up", "--detach", timeout=300)
    cluster.measures.setdefault("control_plane_up_s", {})[netns or "host"] = round(time.monotonic() - started, 2)
    start_backup_target(plane)
    plane.hafen("backup-policy", "--disable")
    try:
        yield plane
    finally:
        log = data_dir / "controller.log"
        if log.exists():
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copyfile(log, ARTIFACTS / f"multinode-controller-{netns or 'host'}.log")
        plane.hafen("down", check=False)
        shutil.rmtree(data_dir, ignore_errors=True)
        # the cluster is thrown away with everything on it; only the control plane's own services go now
        try:
            services = cluster.manager.client.services.list(filters={"label": f"hafen.prefix={prefix}"})
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as error:
            # Debian's dockerd 20.10 has died here once after a node was removed (swarmkit); the tests before
            # had passed, and the cluster goes anyway: the log tail is kept, and the run goes on.
            tail = (cluster.manager.run_dir / "dockerd.log").read_text(errors="replace").splitlines()[-3:]
            cluster.measures.setdefault("manager_gone_at_teardown", []).append([str(error)[:200], *tail])
            services = []
        for service in services:
            service.remove()


def where(cluster: Cluster, instance: str) -> dict[str, set[str]]:
    """Per service of the instance, the nodes its running tasks are on."""
    api = cluster.manager.client.api
    names = {n["ID"]: n["Description"]["Hostname"] for n in api.nodes()}
    services = {s["ID"]: s["Spec"]["Name"] for s in api.services(filters={"label": f"hafen.instance={instance}"})}
    found: dict[str, set[str]] = {}
    for task in api.tasks(filters={"service": sorted(services)}) if services else []:
        if task["Status"]["State"] == "running":
            found.setdefault(services[task["ServiceID"]], set()).add(names.get(task.get("NodeID", ""), "?"))
    return found


def through_edge(node: Node, domain: str, path: str, port: int = HTTP_PORT) -> httpx.Response:
    with httpx.Client(base_url=f"http://{node.address}:{port}", headers={"Host": domain}, timeout=10) as c:
        return c.get(path)


@contextlib.contextmanager
def only_on(cluster: Cluster, *nodes: Node) -> Iterator[None]:
    """New tasks go only to these nodes meanwhile (the others paused: what runs there stays)."""
    others = [n for n in cluster.nodes if n not in nodes]
    for node in others:
        cluster.set_availability(node, "pause")
    try:
        yield
    finally:
        for node in others:
            cluster.set_availability(node, "active")


def create_and_ask(cluster: Cluster, plane: NodePlane, name: str, *extra: str) -> None:
    """Create a demo instance; it runs, and answers through the edge at the manager's address, from the host."""
    started = time.monotonic()
    result = plane.hafen("create", name, "--app", "demo", "--json", "--timeout", "120", *extra, check=False)
    placement = {k: sorted(v) for k, v in where(cluster, name).items()}
    cluster.measures.setdefault("demo", {})[name] = {"create_s": round(time.monotonic() - started, 2),
                                             "exit": result.returncode, "placement": placement}
    assert result.returncode == 0, result.stderr.strip()
    assert json.loads(result.stdout)["state"] == "running"
    response = through_edge(cluster.manager, f"{name}.localhost", "/health")
    assert response.status_code == 200, response.text
    page = through_edge(cluster.manager, f"{name}.localhost", "/")
    assert page.status_code == 200 and name in page.text


@pytest.fixture(scope="module")
def plane(cluster: Cluster, hafen_images: None) -> Iterator[NodePlane]:
    with control_plane(cluster, cluster.manager.namespace) as p:
        yield p


def start_backup_target(plane: NodePlane) -> None:
    """The REST server for restic the backups of this plane go to, on the manager, on the backup network
    (an attachable overlay: the jobs reach it from every node)."""
    network = f"{plane.prefix}-backup"
    labels = {"hafen.prefix": plane.prefix}
    if not plane.docker.networks.list(names=[network]):
        plane.docker.networks.create(network, driver="overlay", attachable=True, scope="swarm", labels=labels)
    plane.docker.containers.run("hafen/backup-target:1", name=f"{plane.prefix}-backup-target", network=network,
                                labels=labels, detach=True, tmpfs={"/data": "size=256m"})


def test_demo_instance_on_the_manager(cluster: Cluster, plane: NodePlane) -> None:
    """The control plane on a manager of three nodes, the instance on the manager: as on one node."""
    with only_on(cluster, cluster.manager):
        try:
            create_and_ask(cluster, plane, "mnhere")
            placed = where(cluster, "mnhere")
            assert placed and all(nodes == {"hmn-node1"} for nodes in placed.values()), placed
        finally:
            plane.hafen("erase", "mnhere", "--yes", "--timeout", "120", check=False)


@contextlib.contextmanager
def note_client(cluster: Cluster, plane: NodePlane, name: str) -> Iterator[httpx.Client]:
    """Logged in as the instance's admin, through the edge at the manager's address."""
    password = json.loads(plane.hafen("credentials", name, "--json").stdout)["password"]
    with httpx.Client(base_url=f"http://{cluster.manager.address}:{HTTP_PORT}",
                      headers={"Host": f"{name}.localhost"}, timeout=15) as client:
        response = client.post("/login", json={"username": "admin", "password": password})
        assert response.status_code == 200, response.text
        yield client


def notes(cluster: Cluster, plane: NodePlane, name: str) -> list[str]:
    with note_client(cluster, plane, name) as client:
        return [n["body"] for n in client.get("/notes").json()]


def node_of(plane: NodePlane, name: str) -> str:
    return str(plane.json("show", name)["node"])


@pytest.fixture(scope="module")
def spread(cluster: Cluster, plane: NodePlane) -> Iterator[dict[str, str]]:
    """Three demo instances made one after another: by the placement rule, one on each node."""
    names = ["mnone", "mntwo", "mnthree"]
    try:
        for name in names:
            create_and_ask(cluster, plane, name)
            with note_client(cluster, plane, name) as client:
                assert client.post("/notes", json={"body": f"note of {name}"}).status_code == 201
        yield {name: node_of(plane, name) for name in names}
    finally:
        for name in names:
            plane.hafen("erase", name, "--yes", "--timeout", "180", check=False)


def test_instances_land_on_different_nodes_with_their_data_beside_them(cluster: Cluster, plane: NodePlane,
                                                                      spread: dict[str, str]) -> None:
    assert sorted(spread.values()) == ["hmn-node1", "hmn-node2", "hmn-node3"], spread
    for name, node in spread.items():
        placed = where(cluster, name)
        # what mounts a volume runs where the volumes are; the edge reaches the web on any node
        assert placed[f"{PREFIX}-{name}_db"] == {node} and placed[f"{PREFIX}-{name}_web"] == {node}, placed
        assert through_edge(cluster.manager, f"{name}.localhost", "/health").status_code == 200
    listed = {n["name"]: n for n in plane.json("node", "list")}
    for name, node in spread.items():
        assert name in listed[node]["instances"] and listed[node]["reserved_bytes"] > 0


def test_the_images_reach_the_other_nodes_through_the_registry_by_digest(cluster: Cluster, plane: NodePlane,
                                                                         spread: dict[str, str]) -> None:
    """The workers were given only the registry's image (and the demo app's, for test_cluster.py): PostgreSQL's
    and Redis' images came from the manager through their node's mirror, named by digest."""
    registry = f"127.0.0.1:{REGISTRY_PORT}"
    specs = {s.name: s.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
             for s in cluster.manager.client.services.list(filters={"label": f"hafen.prefix={PREFIX}"})}
    for name in spread:
        for svc in ("db", "redis", "web"):
            assert specs[f"{PREFIX}-{name}_{svc}"].startswith(f"{registry}/hafen/"), specs
            assert "@sha256:" in specs[f"{PREFIX}-{name}_{svc}"], specs
    for node in cluster.nodes[1:]:
        assert not node.client.images.list(name="hafen/postgres"), f"{node.name} was given PostgreSQL's image"
        pulled = {d.split("@")[0] for image in node.client.images.list()
                  for d in image.attrs.get("RepoDigests") or []}
        assert {f"{registry}/hafen/postgres", f"{registry}/hafen/redis"} <= pulled, (node.name, pulled)
    cluster.measures["registry_pushes"] = [line for line in (plane.data_dir / "controller.log").read_text()
                                           .splitlines() if "registry:" in line][-12:]


def _task_container(node: Node, service: str) -> Any:
    found = node.client.containers.list(filters={"label": f"com.docker.swarm.service.name={service}"})
    assert found, f"no container of {service} on {node.name}"
    return found[0]


def test_instances_on_different_nodes_cannot_reach_each_other(cluster: Cluster, plane: NodePlane,
                                                              spread: dict[str, str]) -> None:
    """The isolation probes of the single-node tier, with A on node 2 and B on node 3 (overlays span nodes)."""
    a = next(name for name, node in spread.items() if node == "hmn-node2")
    b = next(name for name, node in spread.items() if node == "hmn-node3")
    node_a, node_b = cluster.node("hmn-node2"), cluster.node("hmn-node3")
    web_a = _task_container(node_a, f"{PREFIX}-{a}_web")
    web_b, db_b, redis_b = (_task_container(node_b, f"{PREFIX}-{b}_{svc}") for svc in ("web", "db", "redis"))

    def ip(container: Any, network: str) -> str:
        return str(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])

    # A's own services answer: the probes can tell an answer from none
    for script, host, port in ((HTTP, "127.0.0.1", "8000"), (POSTGRES, "db", ""), (REDIS, "redis", "")):
        code, output = run_in(web_a, "python3", "-c", script, host, *([port] if port else []))
        assert code == 0 and "answered" in output, output
    http_targets = [(ip(web_b, f"{PREFIX}-{b}_edge"), "8000"), (ip(web_b, f"{PREFIX}-{b}_internal"), "8000"),
                    (f"{PREFIX}-{b}_web", "8000"), (f"tasks.{PREFIX}-{b}_web", "8000"),
                    # node 3 itself: its registry mirror answers HTTP to anyone with a route there
                    (node_b.address, str(REGISTRY_PORT))]
    for target, port in http_targets:
        code, output = run_in(web_a, "python3", "-c", HTTP, target, port)
        assert code != 0 and "http answered" not in output, f"A's web got an HTTP answer from {target}: {output}"
    for script, target in ((POSTGRES, ip(db_b, f"{PREFIX}-{b}_internal")), (POSTGRES, f"{PREFIX}-{b}_db"),
                           (REDIS, ip(redis_b, f"{PREFIX}-{b}_internal")), (REDIS, f"{PREFIX}-{b}_redis")):
        code, output = run_in(web_a, "python3", "-c", script, target)
        assert code != 0 and "answered" not in output, f"A's web reached {target}: {output}"
    code, output = run_in(web_a, "python3", "-c", ROUTES)
    assert code == 0 and not [line for line in output.splitlines()[1:] if line.split()[1:2] == ["00000000"]], output
    for name in (a, b):
        assert through_edge(cluster.manager, f"{name}.localhost", "/health").status_code == 200


def test_a_proxy_runs_on_every_node_labelled_for_the_edge(cluster: Cluster, plane: NodePlane,
                                                         spread: dict[str, str]) -> None:
    """Node 3 labelled for the edge gets a proxy of its own (its edge agent's), which answers for every
    instance wherever its web runs; a new instance reaches it without a restart of that proxy; without the
    label, the proxy goes."""
    node3 = cluster.node("hmn-node3")
    proxy = f"{PREFIX}-edge"

    def answers(name: str) -> bool:
        try:
            return through_edge(node3, f"{name}.localhost", "/health").status_code == 200
        except httpx.HTTPError:
            return False

    plane.hafen("node", "label", "hmn-node3", "edge=true")
    try:
        started = time.monotonic()
        plane.wait_until(lambda: all(answers(name) for name in spread), timeout=180, interval=1)
        cluster.measures["edge_agent_first_proxy_s"] = round(time.monotonic() - started, 1)
        began = node3.client.containers.get(proxy).attrs["State"]["StartedAt"]
        try:
            create_and_ask(cluster, plane, "mnedge")
            plane.wait_until(lambda: answers("mnedge"), timeout=60, interval=0.5)
            assert node3.client.containers.get(proxy).attrs["State"]["StartedAt"] == began  # not restarted
            assert answers(next(iter(spread)))
        finally:
            plane.hafen("erase", "mnedge", "--yes", "--timeout", "180")
    finally:
        plane.hafen("node", "label", "hmn-node3", "edge-")
    # (the low-level list: the SDK's inspects each container, and one may go between; the name filter would
    # match the agent's own container too)
    plane.wait_until(lambda: not [c for c in node3.client.api.containers(all=True) if f"/{proxy}" in c["Names"]],
                     timeout=90)


def test_instances_sleep_and_wake_on_the_requests_of_a_proxy_on_another_node(cluster: Cluster, plane: NodePlane,
                                                                            spread: dict[str, str]) -> None:
    """With a proxy on node 3, the controller counts its requests from its agent's reports: requests there only
    keep an instance awake past its idle time; once they stop it sleeps, and a request there wakes it."""
    node3 = cluster.node("hmn-node3")
    name = next(name for name, node in spread.items() if node == "hmn-node2")
    domain = f"{name}.localhost"

    def health() -> int:
        try:
            return through_edge(node3, domain, "/health").status_code
        except httpx.HTTPError:
            return 0

    def sleep() -> Any:
        return plane.json("show", name)["elastic"]["sleep"]

    plane.hafen("node", "label", "hmn-node3", "edge=true")
    try:
        plane.wait_until(lambda: health() == 200, timeout=180, interval=1)
        plane.hafen("policy", name, "--idle", "20s", "--deep-sleep", "never")
        until = time.monotonic() + 35  # longer than its idle time, requests at node 3 only
        while time.monotonic() < until:
            assert health() == 200
            time.sleep(3)
        assert not sleep(), plane.json("show", name)["elastic"]  # awake
        quiet = time.monotonic()
        plane.wait_until(lambda: plane.json("show", name)["state"] == "sleeping", timeout=120, interval=1)
        cluster.measures["remote_edge_asleep_after_s"] = round(time.monotonic() - quiet, 1)
        assert sleep() == "light"
        time.sleep(2)  # node 3's agent reads the sleepers every second
        started = time.monotonic()
        first = through_edge(node3, domain, "/health")
        # the waking page at once: node 3's proxy has the sleeper in its folder, as the controller's proxy has
        cluster.measures["remote_edge_waking_page_s"] = round(time.monotonic() - started, 3)
        assert first.status_code == 503 and "waking up" in first.text, first.text[:300]
        plane.wait_until(lambda: health() == 200, timeout=60, interval=0.25)
        cluster.measures["remote_edge_wake_s"] = round(time.monotonic() - started, 2)
        assert plane.json("show", name)["elastic"]["decisions"][0]["action"] == "wake"
        # what node 3's agent costs at rest now that it reads its proxy's log and the sleepers
        agent = _task_container(node3, f"{PREFIX}-edge-agent")
        before, began = agent.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"], time.monotonic()
        time.sleep(10)
        used = agent.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"] - before
        cluster.measures["edge_agent_cpu_percent_of_a_core"] = round(used / 1e9 / (time.monotonic() - began) * 100, 2)
    finally:
        plane.hafen("policy", name, "--idle", "never", check=False)
        plane.hafen("node", "label", "hmn-node3", "edge-")
    assert through_edge(cluster.manager, domain, "/health").status_code == 200
    plane.wait_until(lambda: not [c for c in node3.client.api.containers(all=True)
                                  if f"/{PREFIX}-edge" in c["Names"]], timeout=90)


CROWD = "mncrowd"  # an organisation whose placement labels only node 2 has, while its instances are made
MOTION = "Survives the drain"


def openslides_client(cluster: Cluster, name: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://{cluster.manager.address}:{HTTP_PORT}",
                        headers={"Host": f"{name}.localhost"}, timeout=30)


@pytest.fixture
def crowd(cluster: Cluster, plane: NodePlane, spread: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Beside the spread instance on node 2: two more demo instances with a note each, and an OpenSlides
    instance with a motion, all put there by their organisation's placement labels (then lifted)."""
    demos, slides = ["mnfour", "mnfive"], "mnslides"
    plane.hafen("org", "create", CROWD)
    plane.hafen("node", "label", "hmn-node2", f"{CROWD}=yes")
    plane.hafen("org", "label", CROWD, f"{CROWD}=yes")
    try:
        for name in demos:
            create_and_ask(cluster, plane, name, "--org", CROWD)
            with note_client(cluster, plane, name) as client:
                assert client.post("/notes", json={"body": f"note of {name}"}).status_code == 201
        started = time.monotonic()
        data = plane.json("create", slides, "--app", "openslides", "--org", CROWD, "--timeout", "600")
        cluster.measures["openslides_create_on_a_worker_s"] = round(time.monotonic() - started, 1)
        with openslides_client(cluster, slides) as client:
            add_motion(login(client, data["password"]), MOTION)
        plane.hafen("org", "label", CROWD, f"{CROWD}-")  # the drain places them by the rule alone
        yield {"demos": demos, "openslides": slides, "password": data["password"]}
    finally:
        for name in [*demos, slides]:
            plane.hafen("erase", name, "--yes", "--timeout", "300", check=False)
        plane.hafen("node", "label", "hmn-node2", f"{CROWD}-", check=False)


def test_a_drain_moves_the_instances_of_a_node_with_their_data(cluster: Cluster, plane: NodePlane,
                                                               spread: dict[str, str], crowd: dict[str, Any]) -> None:
    """Three demo instances and an OpenSlides instance on node 2, moved two at a time with their data."""
    demos = [name for name, node in spread.items() if node == "hmn-node2"] + crowd["demos"]
    moving = [*demos, crowd["openslides"]]
    assert len(demos) == 3 and all(node_of(plane, name) == "hmn-node2" for name in moving)
    started = time.monotonic()
    result = plane.hafen("node", "drain", "hmn-node2", "--timeout", "900", timeout=960)
    downtimes = [float(m) for m in re.findall(r"down for ([0-9.]+) s", result.stdout)]
    cluster.measures["drain"] = {"instances": len(moving), "seconds": round(time.monotonic() - started, 1),
                                 "downtime_s": downtimes, "output": result.stdout.strip().splitlines()}
    assert len(downtimes) == len(moving), result.stdout
    for name in moving:
        assert node_of(plane, name) != "hmn-node2"
        assert all(nodes != {"hmn-node2"} for nodes in where(cluster, name).values())
    for name in demos:
        assert notes(cluster, plane, name) == [f"note of {name}"]
    with openslides_client(cluster, crowd["openslides"]) as client:
        assert titles(login(client, crowd["password"])) == [MOTION]
    plane.wait_until(lambda: next(n for n in plane.json("node", "list") if n["name"] == "hmn-node2")
                     ["availability"] == "drain", timeout=60)
    node = next(n for n in plane.json("node", "list") if n["name"] == "hmn-node2")
    assert node["instances"] == []
    plane.hafen("node", "activate", "hmn-node2")


def test_a_lost_node_makes_its_instances_unreachable_and_evacuate_brings_them_back(
        cluster: Cluster, plane: NodePlane, spread: dict[str, str]) -> None:
    lost = [name for name in spread if node_of(plane, name) == "hmn-node3"]  # the drain may have moved one there
    assert lost
    for name in lost:
        plane.hafen("backup", name, "--timeout", "300")
        plane.wait_until(lambda n=name: plane.json("backups", n)["items"][0]["verification"] == "verified",
                         timeout=300, interval=2)
    cluster.kill(cluster.node(3))
    for name in lost:
        plane.wait_until(lambda n=name: plane.json("show", n)["state"] == "unreachable", timeout=120, interval=2)
    started = time.monotonic()
    result = plane.hafen("node", "evacuate", "hmn-node3", "--yes", "--timeout", "600")
    cluster.measures["evacuate"] = {"instances": len(lost), "seconds": round(time.monotonic() - started, 1)}
    for name in lost:
        assert node_of(plane, name) in ("hmn-node1", "hmn-node2"), result.stdout
        assert plane.json("show", name)["state"] == "running"
        assert notes(cluster, plane, name) == [f"note of {name}"]
    plane.hafen("node", "remove", "hmn-node3")
    assert "hmn-node3" not in {n["name"] for n in plane.json("node", "list")}
