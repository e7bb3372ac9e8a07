"""The installation's registry: its services, and services naming images by digest there (fake engine)."""

from __future__ import annotations

import pytest

from hafen.engine.swarm import pushed_ref
from hafen.instances import nodes
from tests.unit.conftest import LOCAL, converge

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def with_registry(settings, monkeypatch):
    monkeypatch.setattr(settings, "registry_port", 5123)
    return settings


def test_the_digest_in_the_registry_is_found_among_an_images_repo_digests():
    digests = [f"127.0.0.1:5000/hafen/postgres@{DIGEST}", f"127.0.0.1:5123/hafen/redis@{DIGEST}",
               f"127.0.0.1:5123/hafen/postgres@{DIGEST}"]
    assert pushed_ref(digests, "127.0.0.1:5123", "hafen/postgres:15") == f"127.0.0.1:5123/hafen/postgres@{DIGEST}"
    assert pushed_ref(digests, "127.0.0.1:5123", "hafen/demo:1.0") == ""
    assert pushed_ref([f"127.0.0.1:5123/hafen/postgres-x@{DIGEST}"], "127.0.0.1:5123", "hafen/postgres:15") == ""


def test_the_primary_is_pinned_to_the_controllers_node_and_a_mirror_runs_on_every_other(
        controller, engine, with_registry):
    engine.add_node("node2", "host2")
    converge(controller)
    primary, mirror = engine.services["unit-registry"], engine.services["unit-registry-mirror"]
    assert primary.constraints == ["node.id == node1"] and not primary.global_mode
    assert mirror.constraints == ["node.id != node1"] and mirror.global_mode
    manager = engine.node_states["node1"].address.split(":")[0]
    assert mirror.env == {"REGISTRY_PROXY_REMOTEURL": f"http://{manager}:5123"}
    assert [(p.target, p.published) for p in primary.ports] == [(5000, 5123)] == \
        [(p.target, p.published) for p in mirror.ports]
    assert primary.image == mirror.image == "hafen/registry:2"  # by tag: every node has it loaded
    assert "unit-registry" in engine.volumes


def test_without_a_registry_its_services_go(controller, engine, with_registry, monkeypatch):
    converge(controller)
    assert "unit-registry" in engine.services
    monkeypatch.setattr(with_registry, "registry_port", 0)
    converge(controller)
    assert "unit-registry" not in engine.services and "unit-registry-mirror" not in engine.services


def test_services_name_images_by_digest_once_pushed_and_roll_over_when_a_push_brings_new_ones(
        controller, engine, running_instance, with_registry):
    engine.pushed["hafen/postgres:15"] = f"127.0.0.1:5123/hafen/postgres@{DIGEST}"
    running_instance("aaa")
    db = next(s for s in engine.services.values() if s.name.endswith("aaa_db"))
    web = next(s for s in engine.services.values() if s.name.endswith("aaa_web"))
    assert db.image == f"127.0.0.1:5123/hafen/postgres@{DIGEST}"
    assert web.image == engine.image_id("hafen/demo:1.0")  # not pushed yet: by the id of the build it is pinned to
    engine.pushed["hafen/demo:1.0"] = f"127.0.0.1:5123/hafen/demo@{DIGEST}"
    controller.registry_state._pushed = True  # what the pusher's thread says after a push
    assert controller.pass_once()  # sees the push
    controller.pass_once()  # compares the specs: a repair rolls the web over
    converge(controller)
    web = next(s for s in engine.services.values() if s.name.endswith("aaa_web"))
    assert web.image == f"127.0.0.1:5123/hafen/demo@{DIGEST}"


def test_the_join_command_loads_only_the_registrys_image(engine, with_registry):
    join = nodes.join_command(LOCAL)
    assert join["images"] == ["hafen/registry:2"]
    assert "mirror" in join["load_why"]


def test_a_node_that_cannot_pull_yet_is_given_time_before_the_create_fails(controller, engine, monkeypatch):
    from datetime import timedelta

    from hafen.controller import operations
    from hafen.instances import services
    from hafen.instances.models import Operation, OpState

    engine.task_errors["unit-slow_db"] = "No such image: 127.0.0.1:5000/hafen/postgres@sha256:00"
    op = services.create_instance(LOCAL, "slow", "demo")
    for _ in range(5):
        controller.pass_once()
    assert Operation.objects.get(pk=op.pk).state == OpState.RUNNING  # within the grace: the swarm retries
    del engine.task_errors["unit-slow_db"]
    converge(controller)
    assert Operation.objects.get(pk=op.pk).state == OpState.SUCCEEDED

    engine.task_errors["unit-late_db"] = "No such image: 127.0.0.1:5000/hafen/postgres@sha256:00"
    monkeypatch.setattr(operations, "PULL_GRACE", timedelta(0))
    op = services.create_instance(LOCAL, "late", "demo")
    converge(controller)
    failed = Operation.objects.get(pk=op.pk)
    assert failed.state == OpState.FAILED and "No such image" in failed.error


def test_the_mirrors_reach_the_primary_at_the_managers_address_without_the_swarm_port(
        controller, engine, with_registry):
    from dataclasses import replace

    engine.node_states["node1"] = replace(engine.node_states["node1"], address="192.0.2.7:2377")
    converge(controller)
    assert engine.services["unit-registry-mirror"].env == {"REGISTRY_PROXY_REMOTEURL": "http://192.0.2.7:5123"}
