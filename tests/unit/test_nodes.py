"""Nodes: drain (move with the data), evacuation, labels, removal and the join command (fake engine)."""

from __future__ import annotations

import pytest

from hafen.controller.loop import Controller
from hafen.edge.client import FakeEdge
from hafen.errors import Conflict, Forbidden, InvalidInput, NotFound
from hafen.instances import backups, nodes, services
from hafen.instances.models import Instance, Operation, OpState, Snapshot, SnapshotStatus, State, Verification
from tests.unit.conftest import LOCAL, converge
from tests.unit.test_backups import Restic


@pytest.fixture
def restic(engine):
    fake = Restic()
    engine.job_output = fake
    return fake


@pytest.fixture
def two_nodes(engine):
    engine.add_node("node2", "host2")
    return engine


def services_of(engine, name):
    return {s.labels["hafen.service"]: s for s in engine.services.values() if s.labels.get("hafen.instance") == name}


def test_a_drain_moves_each_instance_with_its_data_and_drains_the_node(controller, two_nodes, running_instance,
                                                                        restic):
    engine = two_nodes
    first = running_instance("aaa")
    second = running_instance("bbb")
    assert first.node_id != second.node_id  # spread
    restic.data["aaa"] = {"tables": {"notes": 7}, "schema": "0042", "volumes": {}}
    old = first.node_id
    result = nodes.drain(LOCAL, first.node_name)
    assert [m["instance"] for m in result["moves"]] == ["aaa"]
    # no new instance goes there, but the swarm still runs the backup jobs there
    assert engine.node_states[old].labels[nodes.DRAIN_LABEL] == "moving"
    assert engine.node_states[old].availability == "active"
    states = set()
    converge(controller, until=lambda: states.add(Instance.objects.get(name="aaa").state)
             or not Operation.objects.filter(state__in=(OpState.PENDING, OpState.RUNNING)).exists())
    op = Operation.objects.get(kind="move")
    assert op.state == OpState.SUCCEEDED, op.error
    moved = Instance.objects.get(name="aaa")
    assert moved.node_id == second.node_id and moved.state == State.RUNNING and not moved.maintenance
    assert State.MOVING in states
    # the data came along: backed up after the web stopped, restored and checked on the new node
    assert restic.commands.index("backup aaa") < restic.commands.index("restore aaa")
    assert restic.data["aaa"]["tables"] == {"notes": 7}
    assert services_of(engine, "aaa")["db"].constraints == [f"node.id == {second.node_id}"]
    assert op.params["downtime_seconds"] >= 0
    steps = [s["name"] for s in op.steps]
    assert steps.index("stop-web") < steps.index("backup") < steps.index("repin") < steps.index("verify") \
        < steps.index("empty-old")
    # the old copy is gone (on the controller's own node: the volumes; elsewhere: emptied by a job there)
    if old == "node1":
        assert not any(v.startswith("unit-aaa_") for v in engine.volumes)
    else:
        assert "wipe aaa" in restic.commands
    assert Snapshot.objects.get(reason="move").status == SnapshotStatus.OK
    controller.pass_once()
    assert engine.node_states[old].availability == "drain"
    assert engine.node_states[old].labels[nodes.DRAIN_LABEL] == "done"


def test_drains_move_one_instance_at_a_time(controller, two_nodes, running_instance, restic):
    two_nodes.add_node("node3", "host3", memory_gib=1)  # too small to take anyone first
    names = ["aaa", "bbb", "ccc", "ddd"]
    for name in names:
        running_instance(name)
    node = Instance.objects.get(name="aaa").node_id
    on_node = set(Instance.objects.filter(node_id=node).values_list("name", flat=True))
    assert len(on_node) == 2
    nodes.drain(LOCAL, node)
    most = 0

    def moving_now():
        nonlocal most
        most = max(most, Operation.objects.filter(kind="move", state=OpState.RUNNING, params__turn=True).count())
        return not Operation.objects.filter(state__in=(OpState.PENDING, OpState.RUNNING)).exists()

    converge(controller, max_passes=200, until=moving_now)
    assert most == 1
    assert not Instance.objects.filter(node_id=node).exists()
    assert set(Operation.objects.filter(kind="move").values_list("state", flat=True)) == {OpState.SUCCEEDED}


def test_a_move_whose_restore_fails_goes_back_to_the_old_node_with_its_data(controller, two_nodes,
                                                                           running_instance, restic):
    instance = running_instance("aaa")
    old = instance.node_id
    restic.fail["restore"] = "the repository does not answer"
    two_nodes.fail_jobs.add("unit-aaa_restore")
    nodes.drain(LOCAL, old)
    converge(controller, max_passes=100)
    op = Operation.objects.get(kind="move")
    assert op.state == OpState.FAILED and "the repository does not answer" in op.error
    assert op.params["fell_back"] is True
    back = Instance.objects.get(name="aaa")
    assert back.node_id == old and back.state == State.RUNNING and not back.maintenance
    assert Operation.objects.get(kind="repair").state == OpState.SUCCEEDED
    assert "wipe aaa" not in restic.commands  # the old copy stays: it is the one that runs
    assert services_of(two_nodes, "aaa")["db"].constraints == [f"node.id == {old}"]


def test_a_drain_needs_another_node_and_an_answering_one(controller, engine, running_instance, restic):
    running_instance("aaa")
    with pytest.raises(Conflict, match="no other node"):
        nodes.drain(LOCAL, "host1")
    engine.add_node("node2", "host2")
    engine.node_states["node2"].state = "down"
    with pytest.raises(Conflict, match="evacuate"):
        nodes.drain(LOCAL, "host2")
    with pytest.raises(NotFound, match="no node 'nowhere'"):
        nodes.drain(LOCAL, "nowhere")


def test_only_operators_manage_nodes(people, two_nodes):
    for role in ("admin", "member", "outsider"):
        with pytest.raises(Forbidden):
            nodes.list_nodes(people.actor(role))
        with pytest.raises(Forbidden):
            nodes.drain(people.actor(role), "host2")


def test_evacuation_restores_from_the_latest_verified_backup_and_says_what_is_lost(controller, two_nodes,
                                                                                    running_instance, restic):
    keep = running_instance("aaa")
    lost = running_instance("bbb")
    far = "node2"
    assert {keep.node_id, lost.node_id} == {"node1", far}
    name = keep.name if keep.node_id == far else lost.name
    restic.data[name] = {"tables": {"notes": 3}, "schema": "", "volumes": {}}
    backups.backup(LOCAL, name)
    converge(controller)
    assert Snapshot.objects.get(instance_name=name, reason="manual").verification == Verification.VERIFIED
    two_nodes.node_states[far].state = "down"
    controller.pass_once()
    assert Instance.objects.get(name=name).state == State.UNREACHABLE
    with pytest.raises(Conflict, match="answers"):
        nodes.evacuation_plan(LOCAL, "host1")
    plan = nodes.evacuation_plan(LOCAL, "host2")
    assert [i["instance"] for i in plan["instances"]] == [name]
    assert plan["instances"][0]["data_lost_seconds"] >= 0
    restic.data[name] = {"tables": {"notes": 0}, "schema": "", "volumes": {}}  # what the new node starts with
    result = nodes.evacuate(LOCAL, "host2")
    assert result["skipped"] == []
    converge(controller, max_passes=100)
    op = Operation.objects.get(kind="evacuate")
    assert op.state == OpState.SUCCEEDED, op.error
    back = Instance.objects.get(name=name)
    assert back.node_id == "node1" and back.state == State.RUNNING
    assert restic.data[name]["tables"] == {"notes": 3}
    with pytest.raises(Conflict, match="live on host1"):
        nodes.remove(LOCAL, "host1")
    nodes.remove(LOCAL, "host2")
    assert "node2" not in two_nodes.node_states


def test_an_instance_without_a_verified_backup_is_not_evacuated(controller, two_nodes, running_instance, restic):
    for name in ("aaa", "bbb"):
        running_instance(name)
    far = Instance.objects.get(node_id="node2")
    two_nodes.node_states["node2"].state = "down"
    controller.pass_once()
    result = nodes.evacuate(LOCAL, "host2")
    assert result["skipped"] == [far.name] and result["operations"] == []
    with pytest.raises(Conflict, match="live on host2"):
        nodes.remove(LOCAL, "host2")


def test_labels_are_set_and_removed_and_hafen_keeps_its_own(two_nodes):
    node = nodes.label(LOCAL, "host2", ["tier=large", "zone=a"])
    assert node["labels"] == {"tier": "large", "zone": "a"}
    node = nodes.label(LOCAL, "host2", ["zone-"])
    assert node["labels"] == {"tier": "large"}
    for bad in (["novalue"], ["hafen.drain=done"], ["k=v v"], []):
        with pytest.raises(InvalidInput):
            nodes.label(LOCAL, "host2", bad)


def test_the_join_command_names_the_token_the_manager_and_the_images():
    join = nodes.join_command(LOCAL)
    assert join["join"] == "docker swarm join --token SWMTKN-1-fake-worker 127.0.0.1:2377"
    assert "hafen/postgres:15" in join["images"] and "hafen/openslides:3.3" in join["images"]
    assert join["load"].startswith("docker save hafen/")


def test_the_node_list_shows_resources_reservations_and_instances(two_nodes, running_instance):
    running_instance("aaa")
    listed = {n["name"]: n for n in nodes.list_nodes(LOCAL)}
    assert set(listed) == {"host1", "host2"}
    holder = Instance.objects.get(name="aaa").node_name
    assert listed[holder]["instances"] == ["aaa"] and listed[holder]["reserved_bytes"] > 0
    assert listed["host1"]["role"] == "manager" and listed["host1"]["memory_bytes"] == 24 * 1024**3


@pytest.mark.parametrize("passes_with_a", [2, 4, 6, 9])
def test_a_move_cut_off_by_a_controller_crash_is_finished_by_the_next_one_once(
        controller, engine, edge, settings, two_nodes, running_instance, restic, passes_with_a):
    """The first controller dies after some passes of the move (its in-memory state is lost); a new one
    picks the move up at its recorded step: one backup, one restore, the data on the new node."""
    first = running_instance("aaa")
    running_instance("bbb")
    restic.data["aaa"] = {"tables": {"notes": 7}, "schema": "0042", "volumes": {}}
    nodes.drain(LOCAL, first.node_name)
    for _ in range(passes_with_a):
        controller.pass_once()
    op = Operation.objects.get(kind="move")
    assert op.state in (OpState.PENDING, OpState.RUNNING)  # really cut off in the middle

    second = Controller(engine, FakeEdge(engine), settings)
    second.heartbeat()
    converge(second)
    op.refresh_from_db()
    assert op.state == OpState.SUCCEEDED, op.error
    moved = Instance.objects.get(name="aaa")
    assert moved.node_id != first.node_id and moved.state == State.RUNNING
    assert restic.commands.count("backup aaa") == 1 and restic.commands.count("restore aaa") == 1
    assert restic.data["aaa"]["tables"] == {"notes": 7}
    assert Operation.objects.filter(kind="move").count() == 1
    assert Snapshot.objects.filter(reason="move").count() == 1


def test_edge_agents_run_on_the_other_nodes_and_name_the_edge_nodes_and_networks(controller, two_nodes,
                                                                                 running_instance, settings):
    import json

    engine = two_nodes
    running_instance("aaa")
    nodes.label(LOCAL, "host2", ["edge=true"])
    controller.pass_once()
    agent = engine.services["unit-edge-agent"]
    assert agent.global_mode and agent.constraints == ["node.id != node1"]
    assert agent.env["HAFEN_NODE_ID"] == "{{.Node.ID}}" and agent.env["HAFEN_EDGE_NODES"] == "node2"
    assert agent.env["HAFEN_EDGE_NETWORKS"] == "unit-aaa_edge"
    assert json.loads(agent.env["HAFEN_EDGE_PORTS"]) == {"80": settings.http_port, "443": settings.https_port}
    assert json.loads(agent.env["HAFEN_EDGE_CONFIG"])["apps"]["http"]  # the proxy's own (static) configuration
    assert agent.mounts[0].source == settings.node_docker_socket
    services.stop(LOCAL, "aaa")
    converge(controller)
    assert engine.services["unit-edge-agent"].env["HAFEN_EDGE_NETWORKS"] == ""  # a stopped one answers nowhere
    nodes.label(LOCAL, "host2", ["edge-"])
    controller.pass_once()
    assert engine.services["unit-edge-agent"].env["HAFEN_EDGE_NODES"] == ""  # its agent removes the proxy


@pytest.mark.parametrize("level", ["light", "deep"])
def test_a_drain_moves_a_sleeping_instance_too_and_it_runs_awake_on_the_other_node(
        controller, two_nodes, running_instance, restic, level):
    from hafen.instances.models import Sleep

    first = running_instance("aaa")
    Instance.objects.filter(pk=first.pk).update(state=State.SLEEPING, sleep=level)
    result = nodes.drain(LOCAL, first.node_name)
    assert [m["instance"] for m in result["moves"]] == ["aaa"]
    queued = list(Operation.objects.filter(instance=first, state=OpState.PENDING).order_by("id")
                  .values_list("kind", flat=True))
    assert queued == (["move"] if level == "light" else ["wake", "move"])  # a deep sleeper's database is down
    converge(controller)
    moved = Instance.objects.get(name="aaa")
    assert moved.node_id != first.node_id and moved.state == State.RUNNING and moved.sleep == Sleep.AWAKE
