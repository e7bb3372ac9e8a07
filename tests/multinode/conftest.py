"""The multinode tier: a swarm of three nodes simulated on this machine (see cluster.py).

One cluster for the session, with the images its tests run loaded on every node. It needs root
(network namespaces, a dockerd per node) and the images built on the host's engine
(`hafen images build`, which scripts/test.sh runs first). What it costs to bring up (time, memory)
is written to test-artifacts/multinode.json and printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ARTIFACTS
from tests.multinode.cluster import Cluster

# What every node gets loaded, as `hafen node join-command` says: the registry's image (its mirror there serves
# hafen's other images), and the demo image the tier's tests of the bare swarm run (test_cluster.py). A demo
# instance's database, cache and backup jobs come through the registry (test_hafen.py).
NODE_IMAGES = ["hafen/demo:1.0", "hafen/registry:2"]

MEASURES: dict[str, Any] = {}


def built_here(tags: list[str]) -> dict[str, str]:
    """The host's image for each tag as this checkout builds it (the `hafen.context` label `hafen images build`
    sets), tagged or not: the host's engine is shared, and its tag may name another checkout's build.
    Were the nodes given another, `hafen up` would find it stale and build it there, with no network."""
    import docker

    from hafen.images.build import LABEL_CONTEXT, plan

    jobs = {job.tag: job for job in plan()}
    host = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=120)
    found = {}
    try:
        for tag in tags:
            job = jobs.get(tag)
            image = host.images.get(tag)
            if job is not None and job.context is not None and image.labels.get(LABEL_CONTEXT) != job.digest():
                same = host.images.list(all=True, filters={"label": f"{LABEL_CONTEXT}={job.digest()}"})
                if not same:
                    pytest.fail(f"{tag} as this checkout builds it is not on the host's engine: hafen images build")
                image = same[0]
            found[tag] = str(image.id)
    finally:
        host.close()
    return found


def _mib(value: int) -> float:
    return round(value / 1024**2, 1)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the multinode tier needs root (network namespaces, one dockerd per node)")
    c = Cluster()
    c.start(3, built_here(NODE_IMAGES))
    MEASURES.clear()
    c.measures = MEASURES  # one dict, whichever module object of this conftest a test imports
    time.sleep(5)  # memory at rest, not while the daemons still settle after the loads
    memory = c.memory()
    MEASURES["bring_up_s"] = {k: round(v, 2) for k, v in c.timings.items()}
    MEASURES["nodes"] = len(c.nodes)
    MEASURES["images"] = NODE_IMAGES
    MEASURES["memory_mib_at_rest"] = {name: {k: _mib(v) for k, v in m.items()} for name, m in memory.items()}
    MEASURES["memory_mib_daemons_total"] = _mib(sum(m["daemons"] for m in memory.values()))
    try:
        yield c
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        for node in c.nodes:  # a daemon's panic is only ever seen here
            log = node.run_dir / "dockerd.log"
            if log.exists():
                shutil.copyfile(log, ARTIFACTS / f"multinode-dockerd-{node.name}.log")
        c.stop()
        (ARTIFACTS / "multinode.json").write_text(json.dumps(MEASURES, indent=1))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASURES:
        terminalreporter.section("multinode cluster")
        for key, value in MEASURES.items():
            terminalreporter.write_line(f"{key}: {json.dumps(value)}")
