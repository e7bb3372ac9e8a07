"""Placement of new instances on the nodes of a swarm, pinning, and nodes that stop answering (fake engine)."""

from __future__ import annotations

import json

import pytest

from hafen.access.models import Organisation
from hafen.controller.backup_jobs import RESULT
from hafen.engine.base import NodeState
from hafen.instances import placement, services
from hafen.instances.models import Instance, Operation, OpState, State
from tests.unit.conftest import LOCAL, converge

GIB = 1024**3


def node(node_id: str, free_gib: int = 24, state: str = "ready", availability: str = "active",
         **labels: str) -> NodeState:
    return NodeState(node_id, f"host-{node_id}", "worker", state, availability, labels, 2_000_000_000,
                     free_gib * GIB)


def test_the_node_with_the_most_unreserved_memory_wins():
    nodes = [node("a", 16), node("b", 24), node("c", 32)]
    assert placement.choose(nodes, {"c": 20 * GIB}, {}).id == "b"
    assert placement.choose(nodes, {}, {}).id == "c"


def test_only_ready_active_nodes_with_the_asked_labels_take_instances():
    nodes = [node("a", 64, state="down"), node("b", 64, availability="drain"), node("c", 64, availability="pause"),
             node("d", 8, tier="large"), node("e", 32), node("f", 64, **{"hafen.drain": "moving"})]
    assert placement.choose(nodes, {}, {}).id == "e"
    assert placement.choose(nodes, {}, {"tier": "large"}).id == "d"
    with pytest.raises(placement.NoNode, match="tier=gold"):
        placement.choose(nodes, {}, {"tier": "gold"})


def test_reserved_memory_follows_the_size_and_the_replicas():
    one = placement.reserved_bytes("openslides", "3.3", "small", 1)
    two = placement.reserved_bytes("openslides", "3.3", "small", 2)
    # web 1G per replica, db 512M, redis 256M
    assert one == (1024 + 512 + 256) * 1024**2
    assert two - one == 1024**3


def test_new_instances_spread_over_the_nodes_and_stateful_services_are_pinned(controller, engine):
    engine.add_node("node2", "host2")
    engine.add_node("node3", "host3")
    for name in ("aaa", "bbb", "ccc"):
        services.create_instance(LOCAL, name, "demo")
    converge(controller)
    placed = {i.name: (i.node_id, i.node_name) for i in Instance.objects.all()}
    assert {node_id for node_id, _ in placed.values()} == {"node1", "node2", "node3"}
    for name, (node_id, _) in placed.items():
        specs = {s.labels["hafen.service"]: s for s in engine.services.values()
                 if s.labels.get("hafen.instance") == name}
        # everything runs beside the volumes (the web mounts one, so it stays too)
        assert specs["db"].constraints == [f"node.id == {node_id}"]
        assert specs["web"].constraints == [f"node.id == {node_id}"]
        assert specs["redis"].constraints == [f"node.id == {node_id}"]
        assert dict(specs["web"].mounts[0].labels)["hafen.instance"] == name
    assert Instance.objects.get(name="aaa").state == State.RUNNING


def test_an_organisation_asks_for_labelled_nodes(controller, engine):
    engine.add_node("node2", "host2", memory_gib=4, labels={"customer": "acme"})
    Organisation.objects.create(slug="acme", name="Acme", node_labels={"customer": "acme"})
    services.create_instance(LOCAL, "acme1", "demo", organisation="acme")
    services.create_instance(LOCAL, "other", "demo")
    converge(controller)
    assert Instance.objects.get(name="acme1").node_id == "node2"
    assert Instance.objects.get(name="other").node_id == "node1"


def test_no_node_to_take_an_instance_fails_its_create_with_one_line(controller, engine):
    engine.node_states["node1"].availability = "drain"
    op = services.create_instance(LOCAL, "nowhere", "demo")
    converge(controller)
    op.refresh_from_db()
    assert op.state == OpState.FAILED
    assert "no node takes new instances" in op.error and "\n" not in op.error
    assert not any(s.labels.get("hafen.instance") == "nowhere" for s in engine.services.values())


def test_an_instance_made_before_placement_stays_unpinned(controller, engine, running_instance):
    instance = running_instance("legacy")
    Instance.objects.filter(pk=instance.pk).update(node_id="", node_name="")
    before = {n: s.digest() for n, s in engine.services.items() if s.labels.get("hafen.instance") == "legacy"}
    services.restart(LOCAL, "legacy")
    converge(controller)
    instance.refresh_from_db()
    assert instance.node_id == ""
    web = next(s for s in engine.services.values() if s.labels.get("hafen.instance") == "legacy"
               and s.labels.get("hafen.service") == "web")
    assert web.constraints == [] and len(before) >= 3


def test_a_node_that_stops_answering_makes_its_instances_unreachable_not_errors(controller, engine,
                                                                                 running_instance):
    engine.add_node("node2", "host2", memory_gib=64)
    instance = running_instance("far")
    assert instance.node_id == "node2"
    engine.node_states["node2"].state = "down"
    controller.pass_once()
    instance.refresh_from_db()
    assert instance.state == State.UNREACHABLE
    assert services.detail(LOCAL, instance)["state"] == "unreachable"
    engine.node_states["node2"].state = "ready"
    controller.pass_once()
    instance.refresh_from_db()
    assert instance.state == State.RUNNING


def test_erasing_an_instance_on_another_node_empties_its_volumes_there(controller, engine, running_instance):
    engine.add_node("node2", "host2", memory_gib=64)
    instance = running_instance("remote")
    assert instance.node_id == "node2"
    assert not any(v.startswith("unit-remote_") for v in engine.volumes)  # made where first mounted
    engine.job_output = lambda spec: [RESULT + json.dumps({"wiped": spec.command[2:]})]
    op = services.erase(LOCAL, "remote")
    converge(controller)
    op.refresh_from_db()
    assert op.state == OpState.SUCCEEDED, op.error
    wipe = [c for c in engine.calls if c.startswith("apply_service") and c.endswith("_wipe")]
    assert wipe, engine.calls[-30:]
    assert [s["name"] for s in op.steps if s["name"].startswith("wipe")] == ["wipe", "wipe-cleanup"]
    assert not Operation.objects.filter(instance_name="remote", state__in=(OpState.PENDING, OpState.RUNNING))
