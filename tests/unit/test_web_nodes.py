"""The Nodes page and the node endpoints of the API: operators only; drain, labels and evacuation through them."""

import json

import pytest
from django.test import Client

from hafen.access.models import AuditEntry
from hafen.instances.models import Instance, Operation
from tests.unit.test_web_backups import client_for, messages_of, page


@pytest.fixture
def world(people, engine, running_instance, controller):
    engine.add_node("node2", "host2")
    running_instance("kestrel", organisation="acme")
    running_instance("quokka", organisation="globex")
    controller.heartbeat()
    return people


def test_operators_see_the_nodes_and_everyone_else_is_told_there_is_no_such_page(world):
    text = page(client_for(world, "operator").get("/nodes"))
    assert ">host1</td>" in text and ">host2</td>" in text
    assert "docker swarm join --token" in text and 'href="/nodes"' in text
    for role in ("admin", "member", "outsider"):
        client = client_for(world, role)
        assert client.get("/nodes").status_code == 404
        assert client.post("/nodes/host2/drain", {"confirm": "host2"}).status_code == 404
        assert 'href="/nodes"' not in page(client.get("/"))
    assert not Operation.objects.filter(kind="move").exists()


def test_a_drain_needs_the_node_name_typed_and_then_queues_the_moves(world):
    client = client_for(world, "operator")
    holder = Instance.objects.get(name="kestrel").node_name
    response = client.post(f"/nodes/{holder}/drain", {"confirm": "nope"}, follow=True)
    assert any("type the node's name" in m for m in messages_of(response))
    assert not Operation.objects.filter(kind="move").exists()
    response = client.post(f"/nodes/{holder}/drain", {"confirm": holder}, follow=True)
    assert any(f"Draining {holder}: 1 instance(s) to move" in m for m in messages_of(response))
    assert list(Operation.objects.filter(kind="move").values_list("instance_name", flat=True)) == ["kestrel"]
    rows = page(client.get("/nodes/rows"))
    assert "kestrel" in rows and ">move</td>" in rows
    assert AuditEntry.objects.filter(action="node-drain", result="ok").exists()


def test_labels_through_the_page_and_bad_labels_get_one_line(world):
    client = client_for(world, "operator")
    client.post("/nodes/host2/label", {"changes": "tier=large zone=a"})
    assert "<code>tier=large</code>" in page(client.get("/nodes/rows"))
    response = client.post("/nodes/host2/label", {"changes": "hafen.drain=x"}, follow=True)
    assert any("not a label key" in m for m in messages_of(response))


def test_the_api_lists_nodes_for_operators_only(world):
    client = Client()
    listed = client.get("/api/v1/nodes", **world.headers("operator"))
    assert listed.status_code == 200
    assert {n["name"] for n in listed.json()} == {"host1", "host2"}
    for role in ("admin", "member", "outsider"):
        answer = client.get("/api/v1/nodes", **world.headers(role))
        assert answer.status_code == 403 and answer.json()["error"]["message"]
    assert client.get("/api/v1/nodes", **world.headers("read")).status_code == 403


def test_the_api_drains_labels_and_refuses_an_evacuation_of_a_node_that_answers(world):
    client = Client()
    headers = world.headers("operator")
    labelled = client.post("/api/v1/nodes/host2/labels", json.dumps({"changes": ["tier=large"]}),
                           content_type="application/json", **headers)
    assert labelled.status_code == 200 and labelled.json()["labels"] == {"tier": "large"}
    bad = client.post("/api/v1/nodes/host2/labels", json.dumps({"changes": ["=x"]}),
                      content_type="application/json", **headers)
    assert bad.status_code == 400 and "not a label key" in bad.json()["error"]["message"]
    plan = client.get("/api/v1/nodes/host2/evacuation", **headers)
    assert plan.status_code == 409 and "answers" in plan.json()["error"]["message"]
    holder = Instance.objects.get(name="quokka").node_name
    drained = client.post(f"/api/v1/nodes/{holder}/drain", **headers)
    assert drained.status_code == 202
    assert [m["instance"] for m in drained.json()["moves"]] == ["quokka"]
    assert drained.json()["moves"][0]["move"]["from_node"] == holder
    assert client.get("/api/v1/nodes/nowhere/evacuation", **headers).status_code == 404
