"""A swarm of several nodes on this one machine: each node its own dockerd in its own network namespace.

    with Cluster() as cluster:           # or cluster.start(n=3) ... cluster.stop()
        cluster.load_images(["hafen/demo:1.0"])
        cluster.nodes[1].client.services.list()

Layout (everything named with the prefix, default "hmn", so that it never touches the host's engine,
its swarm, or another run's cluster):

- a hub namespace `hmn-hub` with a bridge `hmnbr0`; each node's namespace `hmn-nodeN` has an `eth0`
  (192.168.213.(10+N)/24) whose peer is on the bridge; the host joins the bridge with one more veth
  (`hmn-host`, 192.168.213.254/24), so that `http://NODE_ADDRESS:PORT` of a port a node publishes in
  host mode answers from the host;
- each node's dockerd runs in its namespace (`nsenter --net`, not `ip netns exec`, which remounts /sys),
  inside `unshare --uts` with the node's own hostname, with its own data root
  (/var/lib/hafen-mn/hmn-nodeN), exec root, pid file and socket (/run/hafen-mn/hmn-nodeN/), bridge
  address and cgroup parent; it stays in the host's mount namespace, so its mounts show on the host
  and bind mounts of host paths work as on the host's engine;
- the swarm: node 1 is its only manager, the others join as workers; its overlay networks come from
  their own address pool (10.213.0.0/16), apart from the host's engine's.

Nodes start empty and no registry answers: `load_images` copies images from the host's engine
(`docker save` once per set of images, cached by their ids, `docker load` into each node).

A killed earlier run leaves namespaces, dockerds and mounts behind: `start` first removes whatever
carries its prefix (`cleanup`), and so does `stop`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

PREFIX = "hmn"
SUBNET = "192.168.213"  # a private /24 only between our own namespaces and the host's veth
HOST_OCTET = 254
ADDR_POOL = "10.213.0.0/16"  # the test swarm's overlay networks (the host's swarm uses 10.0.0.0/8)
LIB_DIR = Path("/var/lib/hafen-mn")
RUN_DIR = Path("/run/hafen-mn")
HOST_SOCKET = "unix:///var/run/docker.sock"
IMAGE_CACHE = Path(tempfile.gettempdir()) / "hafen-mn-images"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("ip", *(["-n", ns] if ns else []), *args, check=check)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as gone
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return False


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if _alive(p)]
    return left


def _cmdline_pids(needle: str) -> list[int]:
    """Processes whose command line mentions the text (dockerd, containerd and shims of a node)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
    return found


def _cgroup_pids(cgroup_parent: str) -> list[int]:
    """Processes of the node's containers: every one is in a cgroup under the node's cgroup parent."""
    pids: set[int] = set()
    for root in Path("/sys/fs/cgroup").glob(f"*/{cgroup_parent}"):
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(line) for line in procs.read_text().split())
    return sorted(pids)


def _unmount_under(*dirs: Path) -> None:
    """Unmount whatever is mounted below the directories (deepest first; lazily, so a busy one goes too)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == str(d) or point.startswith(f"{d}/") for d in dirs):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        _run("umount", "-l", point, check=False)


@dataclass
class Node:
    index: int
    prefix: str = PREFIX
    subnet: str = SUBNET
    pid: int | None = None
    _client: docker.DockerClient | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """Also the node's hostname, which the swarm reports (`node.hostname` in a constraint)."""
        return f"{self.prefix}-node{self.index}"

    @property
    def namespace(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        return f"{self.subnet}.{10 + self.index}"

    @property
    def data_root(self) -> Path:
        return LIB_DIR / self.name

    @property
    def run_dir(self) -> Path:
        return RUN_DIR / self.name

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def url(self) -> str:
        """For DOCKER_HOST."""
        return f"unix://{self.socket}"

    @property
    def cgroup_parent(self) -> str:
        return self.name

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.url, timeout=120)
        return self._client

    @property
    def node_id(self) -> str:
        return str(self.client.info()["Swarm"]["NodeID"])

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this node."""
        return _run("docker", "-H", self.url, *args, check=check)

    def dockerd_args(self) -> list[str]:
        return [
            "dockerd",
            "--data-root", str(self.data_root),
            "--exec-root", str(self.run_dir / "exec"),
            "--pidfile", str(self.run_dir / "dockerd.pid"),
            "-H", self.url,
            "--bip", f"172.30.{self.index}.1/24",
            "--storage-driver", "overlay2",
            "--cgroup-parent", f"/{self.cgroup_parent}",
            # The host's name server is out of the nodes' reach: without this, every name the swarm does not
            # know (Docker's DNS forwards it) takes 10 s to fail; at the node's own address nothing listens.
            "--dns", self.address,
            "--log-level", "warn",
        ]

    def start_daemon(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        log = (self.run_dir / "dockerd.log").open("ab")
        # nsenter and unshare both exec what follows (no --fork), so the child's pid is dockerd's.
        process = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.namespace}", "unshare", "--uts",
             "sh", "-c", f'hostname {self.name} && exec "$@"', "sh", *self.dockerd_args()],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        self.pid = process.pid

    def wait_daemon(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid is not None and not _alive(self.pid):
                break
            with contextlib.suppress(Exception):
                if self.socket.exists() and self.client.ping():
                    return
            time.sleep(0.2)
        tail = (self.run_dir / "dockerd.log").read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"dockerd of {self.name} did not answer: {' / '.join(tail)}")

    def all_pids(self) -> list[int]:
        """dockerd, its containerd and shims (all mention the node's run directory), and its containers."""
        pids = set(_cmdline_pids(f"{self.run_dir}/")) | set(_cgroup_pids(self.cgroup_parent))
        if self.pid is not None and _alive(self.pid):
            pids.add(self.pid)
        return sorted(pids)

    def memory_pss(self) -> dict[str, int]:
        """Proportional set size in bytes of the node's daemons (dockerd, containerd, shims) and containers."""
        daemons = set(_cmdline_pids(f"{self.run_dir}/"))
        result = {"daemons": 0, "containers": 0}
        for pid in self.all_pids():
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
                match = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
                if match:
                    result["daemons" if pid in daemons else "containers"] += int(match.group(1)) * 1024
        return result

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


class Cluster:
    def __init__(self, prefix: str = PREFIX, subnet: str = SUBNET, addr_pool: str = ADDR_POOL) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{1,5}", prefix):
            raise ValueError("prefix: 2 to 6 lowercase letters and digits (interface names are short)")
        self.prefix = prefix
        self.subnet = subnet
        self.addr_pool = addr_pool
        self.nodes: list[Node] = []
        self.timings: dict[str, float] = {}
        self.measures: dict[str, Any] = {}  # what a test run measured on this cluster, for its report

    # -- names -----------------------------------------------------------------------------------------
    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br0"

    @property
    def host_link(self) -> str:
        return f"{self.prefix}-host"

    @property
    def host_address(self) -> str:
        return f"{self.subnet}.{HOST_OCTET}"

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def node(self, name_or_index: str | int) -> Node:
        for node in self.nodes:
            if name_or_index in (node.name, node.index):
                return node
        raise KeyError(name_or_index)

    # -- life cycle ------------------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        if not self.nodes:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, n: int = 3, images: Iterable[str] | dict[str, str] = ()) -> Cluster:
        """Clean up leftovers of this prefix, then a swarm of n nodes (node 1 the manager), with the images."""
        if not 1 <= n <= 9:
            raise ValueError("1 to 9 nodes")
        started = time.monotonic()
        cleanup(self.prefix)
        self.timings["cleanup"] = time.monotonic() - started
        self.nodes = [Node(i, self.prefix, self.subnet) for i in range(1, n + 1)]
        try:
            mark = time.monotonic()
            self._network()
            self.timings["network"] = time.monotonic() - mark
            mark = time.monotonic()
            for node in self.nodes:
                node.start_daemon()
            for node in self.nodes:
                node.wait_daemon()
            self.timings["daemons"] = time.monotonic() - mark
            mark = time.monotonic()
            self._swarm()
            self.timings["swarm"] = time.monotonic() - mark
            if images:
                mark = time.monotonic()
                self.load_images(images)
                self.timings["images"] = time.monotonic() - mark
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - started
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.close()
        cleanup(self.prefix)
        self.nodes = []

    def _network(self) -> None:
        _ip("netns", "add", self.hub)
        _ip("link", "add", self.bridge, "type", "bridge", ns=self.hub)
        _ip("link", "set", self.bridge, "up", ns=self.hub)
        _ip("link", "set", "lo", "up", ns=self.hub)
        for node in self.nodes:
            _ip("netns", "add", node.namespace)
            hub_end = f"{self.prefix}-n{node.index}"
            _ip("link", "add", hub_end, "netns", self.hub, "type", "veth", "peer", "name", "eth0",
                "netns", node.namespace)
            _ip("link", "set", hub_end, "master", self.bridge, "up", ns=self.hub)
            _ip("addr", "add", f"{node.address}/24", "dev", "eth0", ns=node.namespace)
            _ip("link", "set", "eth0", "up", ns=node.namespace)
            _ip("link", "set", "lo", "up", ns=node.namespace)
        # The host on the same bridge, so that published ports answer at the nodes' addresses.
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", f"{self.prefix}-h", "netns", self.hub)
        _ip("link", "set", f"{self.prefix}-h", "master", self.bridge, "up", ns=self.hub)
        _ip("addr", "add", f"{self.host_address}/24", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")

    def _swarm(self) -> None:
        manager = self.manager
        manager.client.swarm.init(
            advertise_addr=manager.address, listen_addr=f"{manager.address}:2377",
            default_addr_pool=[self.addr_pool], subnet_size=24,
        )
        token = manager.client.swarm.attrs["JoinTokens"]["Worker"]
        for node in self.nodes[1:]:
            node.client.swarm.join(
                remote_addrs=[f"{manager.address}:2377"], join_token=token,
                advertise_addr=node.address, listen_addr=f"{node.address}:2377",
            )
        self.wait_ready(len(self.nodes))

    def ready_nodes(self) -> list[dict[str, Any]]:
        """The swarm's nodes that are ready and active, as the manager sees them."""
        return [
            n for n in self.manager.client.api.nodes()
            if n["Status"]["State"] == "ready" and n["Spec"].get("Availability") == "active"
        ]

    def wait_ready(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.ready_nodes()) >= count:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{count} nodes not ready after {timeout} s")

    # -- images ----------------------------------------------------------------------------------------
    def load_images(self, images: Iterable[str] | dict[str, str], nodes: Iterable[Node] | None = None) -> None:
        """Tags (or tags mapped to host image ids) from the host's engine into the nodes (default: all)."""
        load_images(images if isinstance(images, dict) else list(images),
                    list(nodes) if nodes is not None else self.nodes)

    # -- faults and membership -------------------------------------------------------------------------
    def kill(self, node: Node) -> None:
        """The node is lost: SIGKILL to its dockerd, containerd, shims and containers, and its link down."""
        pids = node.all_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(pids, 10)
        _ip("link", "set", "eth0", "down", ns=node.namespace, check=False)
        node.close()
        node.pid = None

    def kill_daemon(self, node: Node) -> None:
        """Only the node's dockerd dies (SIGKILL); containerd and the containers run on, as after a crash."""
        if node.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGKILL)
            _wait_gone([node.pid], 10)
        node.close()
        node.pid = None

    def leave(self, node: Node, force: bool = False) -> None:
        """`docker swarm leave` on the node."""
        node.client.swarm.leave(force=force)

    def remove(self, node: Node, force: bool = True) -> None:
        """`docker node rm` of the node, on the manager (by hostname)."""
        for entry in self.manager.client.api.nodes(filters={"name": node.name}):
            self.manager.client.api.remove_node(entry["ID"], force=force)

    def set_availability(self, node: Node, availability: str) -> None:
        """active, pause or drain."""
        entry = self.manager.client.nodes.get(node.name)
        spec = dict(entry.attrs["Spec"])
        spec["Availability"] = availability
        entry.update(spec)

    # -- measures --------------------------------------------------------------------------------------
    def memory(self) -> dict[str, dict[str, int]]:
        return {node.name: node.memory_pss() for node in self.nodes}


# -- images ---------------------------------------------------------------------------------------------


def _saved(image_ids: list[str]) -> Path:
    """The images saved from the host's engine in one archive (their shared layers once), cached per set of
    image ids in a temp directory."""
    key = hashlib.sha256(" ".join(sorted(set(image_ids))).encode()).hexdigest()[:20]
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    for old in IMAGE_CACHE.glob("*.tar"):  # archives of builds no run has used for two days
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > 2 * 86400:
                old.unlink()
    path = IMAGE_CACHE / f"{key}.tar"
    if path.exists():
        path.touch()
    else:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        # by id: the tag on the host's engine may meanwhile name another build (another checkout's)
        _run("docker", "-H", HOST_SOCKET, "save", "-o", str(tmp), *sorted(set(image_ids)))
        tmp.replace(path)
    return path


def load_images(images: list[str] | dict[str, str], nodes: list[Node]) -> None:
    """Copy images from the host's engine into each node that lacks them (no registry answers here).

    `images`: tags, or tags mapped to the id of the host's image to load under that tag. Each node loads one
    archive of what it lacks, the nodes in parallel. Kept apart on purpose: a registry in a namespace is
    meant to replace it."""
    if isinstance(images, dict):
        wanted = dict(images)
    else:
        host = docker.DockerClient(base_url=HOST_SOCKET, timeout=600)
        try:
            wanted = {tag: str(host.images.get(tag).id) for tag in images}
        finally:
            host.close()

    def missing(node: Node) -> list[str]:
        lacking = []
        for tag, image_id in wanted.items():
            try:
                if node.client.images.get(tag).id == image_id:
                    continue
            except docker.errors.ImageNotFound:
                pass
            lacking.append(tag)
        return lacking

    todo = {node.name: missing(node) for node in nodes}
    archives = {}
    for tags in todo.values():  # saved one after another: `docker save` of the same set once
        ids = tuple(sorted({wanted[t] for t in tags}))
        if ids and ids not in archives:
            archives[ids] = _saved(list(ids))

    def one(node: Node) -> None:
        tags = todo[node.name]
        if not tags:
            return
        node.docker("load", "-q", "-i", str(archives[tuple(sorted({wanted[t] for t in tags}))]))
        for tag in tags:
            node.docker("tag", wanted[tag], tag)

    with ThreadPoolExecutor(max_workers=len(nodes) or 1) as pool:
        list(pool.map(one, nodes))


# -- cleanup --------------------------------------------------------------------------------------------


def cleanup(prefix: str = PREFIX) -> None:
    """Remove every trace of clusters with this prefix: processes, mounts, directories, links, namespaces.

    Safe to run when nothing is left; used before start (a killed run leaves things behind) and by stop."""
    run_dirs = sorted(RUN_DIR.glob(f"{prefix}-node*")) if RUN_DIR.exists() else []
    lib_dirs = sorted(LIB_DIR.glob(f"{prefix}-node*")) if LIB_DIR.exists() else []
    needle = f"{RUN_DIR}/{prefix}-node"
    # dockerd first, with SIGTERM by its own pid: it stops its containers and its containerd.
    daemons = []
    for pidfile in [d / "dockerd.pid" for d in run_dirs]:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if _alive(pid) and needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                daemons.append(pid)
    daemons += [p for p in _cmdline_pids(needle)
                if p not in daemons and Path(f"/proc/{p}/comm").read_text().strip() == "dockerd"]
    for pid in daemons:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in _wait_gone(daemons, 20):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # What a killed dockerd left running: its containerd, shims and containers.
    for _ in range(3):
        cgroups = [p.name for p in Path("/sys/fs/cgroup/pids").glob(f"{prefix}-node*")]
        rest = set(_cmdline_pids(needle))
        for cgroup in cgroups:
            rest.update(_cgroup_pids(cgroup))
        if not rest:
            break
        for pid in rest:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(rest, 10)
    _unmount_under(*run_dirs, *lib_dirs)
    for directory in [*run_dirs, *lib_dirs]:
        shutil.rmtree(directory, ignore_errors=True)
    # The nodes' cgroups (empty now; rmdir of an empty cgroup directory removes it), deepest first.
    for root in Path("/sys/fs/cgroup").glob(f"*/{prefix}-node*"):
        for sub in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
    _ip("link", "del", f"{prefix}-host", check=False)
    namespaces = _run("ip", "-json", "netns", "list", check=False).stdout.strip()
    for entry in json.loads(namespaces or "[]"):
        name = entry.get("name", "")
        if name == f"{prefix}-hub" or re.fullmatch(rf"{re.escape(prefix)}-node\d+", name):
            for member in _run("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(member), signal.SIGKILL)
            _ip("netns", "delete", name, check=False)


@contextlib.contextmanager
def running(n: int = 3, images: Iterable[str] | dict[str, str] = (), prefix: str = PREFIX) -> Iterator[Cluster]:
    cluster = Cluster(prefix)
    cluster.start(n, images)
    try:
        yield cluster
    finally:
        cluster.stop()


def main() -> None:
    """`python -m tests.multinode.cluster start [N] [IMAGE ...]` leaves a cluster running; `stop` removes it."""
    import sys

    args = sys.argv[1:]
    if args[:1] == ["start"]:
        n = int(args[1]) if len(args) > 1 else 3
        cluster = Cluster().start(n, args[2:])
        for node in cluster.nodes:
            print(f"{node.name} {node.address} DOCKER_HOST={node.url}")
        print(json.dumps({k: round(v, 2) for k, v in cluster.timings.items()}))
    elif args[:1] == ["stop"]:
        cleanup()
    else:
        raise SystemExit("usage: python -m tests.multinode.cluster start [N] [IMAGE ...] | stop")


if __name__ == "__main__":
    main()
