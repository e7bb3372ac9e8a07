import dataclasses
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from hafen.access.policy import Actor
from hafen.controller import operations as ops
from hafen.controller.loop import Controller
from hafen.edge.client import FakeEdge
from hafen.engine.base import LABEL_INSTANCE, LABEL_PREFIX
from hafen.errors import ControlPlaneDown, EngineError, EngineUnavailable
from hafen.instances import naming, services
from hafen.instances.models import ControlPlane, Instance, InstanceSecret, Operation, OpState, SecretStatus, State

LOCAL = Actor.local()

ACTIVE = (OpState.PENDING, OpState.RUNNING)
DEMO_SERVICES = {"unit-eve_db", "unit-eve_redis", "unit-eve_setup", "unit-eve_web"}
BRING_UP_STEPS = [
    "prepare",
    "deploy:db, redis",
    "route",
    "wait:db, redis",
    "deploy:setup",
    "wait:setup",
    "deploy:web",
    "wait:web",
    "verify",
]


def objects_of(engine, name):
    """Every engine object labelled as belonging to one instance, by kind."""

    def mine(labels):
        return labels.get(LABEL_PREFIX) == "unit" and labels.get(LABEL_INSTANCE) == name

    return {
        "services": {n for n, s in engine.services.items() if mine(s.labels)},
        "networks": {n for n, o in engine.networks.items() if mine(o.labels)},
        "volumes": {n for n, o in engine.volumes.items() if mine(o.labels)},
        "secrets": {n for n, o in engine.secrets.items() if mine(o.labels)},
    }


def handler_for(edge, domain):
    routes = edge.config["apps"]["http"]["servers"]["status"]["routes"]
    for route in routes:
        if domain in route.get("match", [{}])[0].get("host", []):
            return route["handle"][0]
    return None


@pytest.fixture
def run(converge):
    """Converge a controller and return the operation as it ended."""

    def run(controller, op):
        converge(controller)
        op.refresh_from_db()
        return op

    return run


# -- the life of an instance ----------------------------------------------------------------------


def test_create_converges_to_running(controller, engine, edge, run):
    op = services.create_instance(LOCAL, "eve", "demo")
    assert Instance.objects.get(name="eve").state == State.PENDING
    op = run(controller, op)

    assert op.state == OpState.SUCCEEDED, op.error
    assert op.error == ""
    assert [s["name"] for s in op.steps] == BRING_UP_STEPS
    assert all(s["state"] == "done" for s in op.steps)
    assert op.progress == 1.0
    assert op.started_at is not None and op.finished_at is not None

    instance = Instance.objects.get(name="eve")
    assert instance.state == State.RUNNING
    assert instance.error == ""
    web = {"replicas": 1, "running": 1, "state": "running", "error": ""}
    assert instance.observed["services"]["web"] == web
    assert instance.observed["services"]["setup"]["state"] == "complete"

    objects = objects_of(engine, "eve")
    assert objects["services"] == DEMO_SERVICES
    assert objects["networks"] == {"unit-eve_internal", "unit-eve_edge"}
    assert engine.networks["unit-eve_internal"].internal is True
    assert engine.networks["unit-eve_edge"].internal is True
    assert objects["volumes"] == {"unit-eve_db", "unit-eve_media"}
    assert objects["secrets"] == {"unit-eve_db_password_v1", "unit-eve_admin_password_v1", "unit-eve_smtp_password_v1"}
    # the shared edge
    assert "unit-edge" in engine.containers and "unit-edge" in engine.networks
    # the shared edge network is internal too (no way off the host for web services); the proxy, a
    # plain container, has its way out through the engine's default bridge, and no service has one
    assert engine.networks["unit-edge"].internal is True
    assert all(not n.endswith("-public") for n in engine.networks)

    # the proxy finds the web service by its alias on the instance's own edge network, which the
    # proxy is attached to at run time; the status server vouches for the domain
    web_networks = [(n.name, n.aliases) for n in engine.services["unit-eve_web"].networks]
    assert ("unit-eve_edge", ("eve.localhost.unit-route",)) in web_networks
    assert "unit-edge" not in {name for name, _ in web_networks}
    assert [networks for networks in engine.edge_containers("unit").values()] == [
        {"unit-edge", "unit-eve_edge"}
    ]
    proxy = edge.configs["proxy"]["apps"]["http"]["servers"]["http"]["routes"][-2]["handle"][0]  # (-1: the 404)
    assert proxy["dynamic_upstreams"]["name"] == "{http.request.host}.unit-route."
    assert "starting" in handler_for(edge, "eve.localhost")["body"]  # shown only while no web answers
    assert edge.probe("eve.localhost", "/health") == 200


def test_create_openslides_converges(controller, engine, edge, run):
    op = run(controller, services.create_instance(LOCAL, "ose", "openslides", size="medium"))
    assert op.state == OpState.SUCCEEDED, op.error
    assert engine.services["unit-ose_web"].replicas == 2
    assert objects_of(engine, "ose")["volumes"] == {"unit-ose_db", "unit-ose_media"}
    assert len(objects_of(engine, "ose")["secrets"]) == 4  # with its login at the mail relay
    assert edge.probe("ose.localhost", "/apps/core/version/") == 200


def test_instance_is_creating_while_the_operation_runs(controller, engine, edge, run, converge):
    engine.hold.add("unit-eve_web")
    op = services.create_instance(LOCAL, "eve", "demo")
    converge(controller, until=lambda: "web" in Instance.objects.get(name="eve").observed.get("services", {}))
    for _ in range(3):
        controller.pass_once()
    op.refresh_from_db()
    instance = Instance.objects.get(name="eve")
    assert op.state == OpState.RUNNING
    assert op.current_step()["name"] == "wait:web"
    assert instance.state == State.CREATING
    assert instance.observed["services"]["web"]["state"] == "starting"
    # the edge says so while the web service starts
    assert "starting" in handler_for(edge, "eve.localhost")["body"]
    assert edge.probe("eve.localhost", "/health") == 503

    engine.hold.clear()
    op = run(controller, op)
    assert op.state == OpState.SUCCEEDED
    assert edge.probe("eve.localhost", "/health") == 200


def test_stop_then_start(controller, engine, edge, running_instance, run):
    running_instance("eve")
    volumes, secrets = set(engine.volumes), set(engine.secrets)

    op = run(controller, services.stop(LOCAL, "eve"))
    assert op.state == OpState.SUCCEEDED, op.error
    assert Instance.objects.get(name="eve").state == State.STOPPED
    assert engine.services["unit-eve_web"].replicas == 0
    assert engine.services["unit-eve_db"].replicas == 0
    assert engine.services["unit-eve_redis"].replicas == 0
    assert "unit-eve_setup" not in engine.services
    handler = handler_for(edge, "eve.localhost")
    assert handler["status_code"] == 503
    assert "stopped" in handler["body"]
    assert edge.probe("eve.localhost", "/health") == 503
    assert set(engine.volumes) == volumes
    assert set(engine.secrets) == secrets
    assert Instance.objects.get(name="eve").observed["services"]["web"]["state"] == "stopped"

    op = run(controller, services.start(LOCAL, "eve"))
    assert op.state == OpState.SUCCEEDED, op.error
    assert Instance.objects.get(name="eve").state == State.RUNNING
    assert objects_of(engine, "eve")["services"] == DEMO_SERVICES
    assert engine.services["unit-eve_web"].replicas == 1
    assert engine.services["unit-eve_db"].replicas == 1
    assert edge.probe("eve.localhost", "/health") == 200


def test_scale(controller, engine, running_instance, run):
    running_instance("eve")
    template = engine.services["unit-eve_web"].template_digest()

    op = run(controller, services.scale(LOCAL, "eve", 3))
    assert op.state == OpState.SUCCEEDED, op.error
    assert engine.services["unit-eve_web"].replicas == 3
    # scaling adds tasks; it does not roll the existing ones over
    assert engine.services["unit-eve_web"].template_digest() == template
    instance = Instance.objects.get(name="eve")
    assert instance.replicas == 3
    assert instance.state == State.RUNNING
    assert instance.observed["services"]["web"]["running"] == 3
    assert services.describe(instance)["replicas"] == {"desired": 3, "running": 3, "set": 3, "autoscaled": None,
                                                       "floor": None}


def test_scale_of_a_stopped_instance_keeps_it_stopped(controller, engine, running_instance, run):
    running_instance("eve")
    run(controller, services.stop(LOCAL, "eve"))

    op = run(controller, services.scale(LOCAL, "eve", 2))
    assert op.state == OpState.SUCCEEDED, op.error
    assert Instance.objects.get(name="eve").replicas == 2
    assert engine.services["unit-eve_web"].replicas == 0
    assert Instance.objects.get(name="eve").state == State.STOPPED


def test_restart_rolls_the_web_template_over(controller, engine, running_instance, run):
    running_instance("eve")
    web = engine.services["unit-eve_web"].template_digest()
    db = engine.services["unit-eve_db"].digest()

    op = run(controller, services.restart(LOCAL, "eve"))
    assert op.state == OpState.SUCCEEDED, op.error
    assert [s["name"] for s in op.steps] == ["deploy:web", "wait:web", "route"]
    assert engine.services["unit-eve_web"].template_digest() != web
    assert engine.services["unit-eve_db"].digest() == db
    assert Instance.objects.get(name="eve").restart_count == 1
    assert Instance.objects.get(name="eve").state == State.RUNNING


def test_new_admin_password_rotates_the_secret(controller, engine, running_instance, run):
    running_instance("eve")
    old = services.credentials(LOCAL, "eve").password

    op, password = services.new_admin_password(LOCAL, "eve")
    assert password != old
    op = run(controller, op)
    assert op.state == OpState.SUCCEEDED, op.error

    assert "unit-eve_admin_password_v1" not in engine.secrets
    assert engine.secrets["unit-eve_admin_password_v2"].data.decode() == password
    assert "unit-eve_db_password_v1" in engine.secrets
    assert {r.name for r in engine.services["unit-eve_setup"].secrets} == {
        "unit-eve_db_password_v1",
        "unit-eve_admin_password_v2",
    }
    assert services.credentials(LOCAL, "eve").password == password
    rows = InstanceSecret.objects.filter(instance__name="eve", name="admin_password")
    assert list(rows.values_list("version", flat=True)) == [2]
    assert Instance.objects.get(name="eve").state == State.RUNNING


def test_delete_keeps_data_and_start_brings_it_back(controller, engine, edge, running_instance, run):
    running_instance("eve")
    before = objects_of(engine, "eve")
    volume = engine.volumes["unit-eve_db"]

    op = run(controller, services.delete(LOCAL, "eve"))
    assert op.state == OpState.SUCCEEDED, op.error
    after = objects_of(engine, "eve")
    assert after["services"] == set()
    assert after["volumes"] == before["volumes"]
    assert after["secrets"] == before["secrets"]
    assert Instance.objects.get(name="eve").state == State.DELETED
    assert handler_for(edge, "eve.localhost") is None
    assert edge.probe("eve.localhost", "/health") == 404

    op = run(controller, services.start(LOCAL, "eve"))
    assert op.state == OpState.SUCCEEDED, op.error
    again = objects_of(engine, "eve")
    assert again["services"] == DEMO_SERVICES
    assert again["volumes"] == before["volumes"]
    assert engine.volumes["unit-eve_db"] is volume  # the same volume, not a new one
    assert again["secrets"] == before["secrets"]
    assert Instance.objects.get(name="eve").state == State.RUNNING
    assert edge.probe("eve.localhost", "/health") == 200


def test_erase_removes_everything_of_the_instance(controller, engine, edge, running_instance, run):
    running_instance("eve")
    running_instance("other")
    other = objects_of(engine, "other")

    op = run(controller, services.erase(LOCAL, "eve"))
    assert op.state == OpState.SUCCEEDED, op.error
    assert op.instance is None
    assert not any(objects_of(engine, "eve").values()), objects_of(engine, "eve")
    leftovers = [
        n
        for kind in (engine.services, engine.networks, engine.volumes, engine.secrets)
        for n in kind
        if n.startswith("unit-eve_")
    ]
    assert leftovers == []
    assert not Instance.objects.filter(name="eve").exists()
    assert not InstanceSecret.objects.filter(instance__name="eve").exists()
    assert edge.probe("eve.localhost", "/health") == 404
    # the neighbour and the shared edge are untouched
    assert objects_of(engine, "other") == other
    assert edge.probe("other.localhost", "/health") == 200
    assert "unit-edge" in engine.containers and "unit-edge" in engine.networks


def test_erase_of_a_deleted_instance(controller, engine, running_instance, run):
    running_instance("eve")
    run(controller, services.delete(LOCAL, "eve"))
    op = run(controller, services.erase(LOCAL, "eve"))
    assert op.state == OpState.SUCCEEDED, op.error
    assert not any(objects_of(engine, "eve").values())
    assert not Instance.objects.filter(name="eve").exists()


def test_operations_of_one_instance_run_one_at_a_time(controller, engine, running_instance, converge):
    running_instance("eve")
    restart = services.restart(LOCAL, "eve")
    passwd, password = services.new_admin_password(LOCAL, "eve")
    controller.pass_once()
    passwd.refresh_from_db()
    assert passwd.state == OpState.PENDING and passwd.steps == []
    converge(controller)
    restart.refresh_from_db()
    passwd.refresh_from_db()
    assert restart.state == passwd.state == OpState.SUCCEEDED
    assert restart.finished_at <= passwd.started_at
    assert services.credentials(LOCAL, "eve").password == password


def never_in_error(controller, name, passes=40, until=None):
    """Run passes until no operation is active (or `until()`), asserting the instance is never in error."""
    for _ in range(passes):
        controller.pass_once()
        instance = Instance.objects.filter(name=name).first()
        assert instance is None or instance.state != State.ERROR, instance.error
        if (until or (lambda: not Operation.objects.filter(state__in=ACTIVE).exists()))():
            return
    pytest.fail(f"not converged: {list(Operation.objects.filter(state__in=ACTIVE))}")


def held_at_wait_web(controller, op):
    """Advance an operation until it waits for a web service that does not come up."""
    for _ in range(20):
        controller.pass_once()
        op.refresh_from_db()
        if op.current_step() and op.current_step()["name"] == "wait:web":
            return op
    pytest.fail(f"{op} never reached wait:web: {op.steps}")


def assert_superseded(op, by):
    op.refresh_from_db()
    assert op.state == OpState.SUPERSEDED
    assert op.error == f"superseded by {by.kind} (operation {by.pk})"
    assert op.done and op.finished_at is not None
    assert "running" not in {s["state"] for s in op.steps}


def test_stop_supersedes_a_waiting_create(controller, engine, converge):
    engine.hold.add("unit-eve_web")  # the web service never comes up on its own
    create = held_at_wait_web(controller, services.create_instance(LOCAL, "eve", "demo"))
    stop = services.stop(LOCAL, "eve")
    controller.pass_once()
    assert_superseded(create, stop)
    never_in_error(controller, "eve")
    stop.refresh_from_db()
    assert stop.state == OpState.SUCCEEDED, stop.error
    assert Instance.objects.get(name="eve").state == State.STOPPED
    assert {svc: engine.services[f"unit-eve_{svc}"].replicas for svc in ("db", "redis", "web")} == {
        "db": 0, "redis": 0, "web": 0}


def test_scale_supersedes_a_waiting_create_and_brings_it_all_up(controller, engine):
    engine.hold.add("unit-eve_web")
    create = held_at_wait_web(controller, services.create_instance(LOCAL, "eve", "demo"))
    scale = services.scale(LOCAL, "eve", 2)
    controller.pass_once()
    assert_superseded(create, scale)
    engine.hold.clear()
    never_in_error(controller, "eve")
    scale.refresh_from_db()
    assert scale.state == OpState.SUCCEEDED, scale.error
    assert [s["name"] for s in scale.steps] == BRING_UP_STEPS  # the whole bring-up, chosen once
    assert Instance.objects.get(name="eve").state == State.RUNNING
    assert engine.services["unit-eve_web"].replicas == 2
    assert objects_of(engine, "eve")["services"] == DEMO_SERVICES


def test_restart_supersedes_a_waiting_start(controller, engine, edge, running_instance, run):
    running_instance("eve")
    run(controller, services.stop(LOCAL, "eve"))
    engine.hold.add("unit-eve_web")
    start = held_at_wait_web(controller, services.start(LOCAL, "eve"))
    web = engine.services["unit-eve_web"].template_digest()
    restart = services.restart(LOCAL, "eve")
    controller.pass_once()
    assert_superseded(start, restart)
    engine.hold.clear()
    never_in_error(controller, "eve")
    restart.refresh_from_db()
    assert restart.state == OpState.SUCCEEDED, restart.error
    assert Instance.objects.get(name="eve").state == State.RUNNING
    assert engine.services["unit-eve_web"].template_digest() != web  # rolled over, too
    assert edge.probe("eve.localhost", "/health") == 200


def test_erase_right_after_create_does_not_wait_for_it(controller, engine, edge):
    create = services.create_instance(LOCAL, "eve", "demo")
    controller.pass_once()
    erase = services.erase(LOCAL, "eve")
    never_in_error(controller, "eve", passes=15)
    assert_superseded(create, erase)
    erase.refresh_from_db()
    assert erase.state == OpState.SUCCEEDED, erase.error
    assert not Instance.objects.filter(name="eve").exists()
    assert not any(objects_of(engine, "eve").values())


def test_a_newer_scale_supersedes_a_restart_and_does_both(controller, engine, running_instance, run):
    running_instance("eve")
    web = engine.services["unit-eve_web"].template_digest()
    restart = services.restart(LOCAL, "eve")
    scale = run(controller, services.scale(LOCAL, "eve", 2))
    assert_superseded(restart, scale)
    assert scale.state == OpState.SUCCEEDED, scale.error
    assert [s["name"] for s in scale.steps] == ["deploy:web", "wait:web", "route"]  # settled: the short plan
    assert engine.services["unit-eve_web"].replicas == 2
    assert engine.services["unit-eve_web"].template_digest() != web


def test_passwd_is_not_superseded_by_a_queued_stop(controller, engine, running_instance, run):
    running_instance("eve")
    engine.hold.add("unit-eve_setup")  # the setup job runs until the stop is queued
    passwd, password = services.new_admin_password(LOCAL, "eve")
    for _ in range(5):
        controller.pass_once()
    stop = services.stop(LOCAL, "eve")
    controller.pass_once()
    passwd.refresh_from_db()
    assert passwd.state == OpState.RUNNING
    engine.hold.clear()
    never_in_error(controller, "eve")
    passwd.refresh_from_db()
    stop.refresh_from_db()
    assert passwd.state == stop.state == OpState.SUCCEEDED, (passwd.error, stop.error)
    assert passwd.finished_at <= stop.started_at
    assert services.credentials(LOCAL, "eve").password == password
    assert Instance.objects.get(name="eve").state == State.STOPPED


def test_failed_passwd_keeps_the_password_the_app_has(controller, engine, running_instance, run):
    running_instance("eve")
    old = services.credentials(LOCAL, "eve").password
    engine.fail_jobs.add("unit-eve_setup")
    op, password = services.new_admin_password(LOCAL, "eve")
    op = run(controller, op)

    assert op.state == OpState.FAILED
    assert op.error.startswith("the admin password was not changed: setup job setup failed")
    assert services.credentials(LOCAL, "eve").password == old
    assert Instance.objects.get(name="eve").state == State.RUNNING  # the app runs on, with its password
    failed = InstanceSecret.objects.get(instance__name="eve", name="admin_password", version=2)
    assert failed.status == SecretStatus.FAILED

    # the next change takes a fresh version (a Docker secret of the failed one may exist) and cleans up
    engine.fail_jobs.clear()
    op, again = services.new_admin_password(LOCAL, "eve")
    op = run(controller, op)
    assert op.state == OpState.SUCCEEDED, op.error
    assert services.credentials(LOCAL, "eve").password == again
    assert engine.secrets["unit-eve_admin_password_v3"].data.decode() == again
    assert not {"unit-eve_admin_password_v1", "unit-eve_admin_password_v2"} & set(engine.secrets)
    rows = InstanceSecret.objects.filter(instance__name="eve", name="admin_password")
    assert sorted(rows.values_list("version", "status")) == [(2, SecretStatus.FAILED), (3, SecretStatus.ACTIVE)]


def test_failed_passwd_through_the_cli_message(controller, engine, running_instance, run):
    running_instance("eve")
    engine.fail_jobs.add("unit-eve_setup")
    op, _ = services.new_admin_password(LOCAL, "eve")
    run(controller, op)
    described = services.describe_operation(Operation.objects.get(pk=op.pk))
    assert described["state"] == "failed"
    assert "the admin password was not changed" in described["error"]


def test_stop_scales_down_in_reverse_start_order(controller, engine, running_instance):
    """The web service stops first, while its database and cache still answer."""
    running_instance("eve")
    services.stop(LOCAL, "eve")
    seen = []
    for _ in range(20):
        controller.pass_once()
        seen.append(tuple(engine.services[f"unit-eve_{svc}"].replicas for svc in ("web", "db", "redis")))
        if seen[-1] == (0, 0, 0):
            break
    assert seen[-1] == (0, 0, 0)
    assert (0, 1, 1) in seen
    assert all(not (web == 1 and db == 0) for web, db, _ in seen)


def test_stop_queued_behind_create(controller, engine, converge):
    create = services.create_instance(LOCAL, "eve", "demo")
    stop = services.stop(LOCAL, "eve")
    converge(controller, max_passes=15)
    assert_superseded(create, stop)
    stop.refresh_from_db()
    assert stop.state == OpState.SUCCEEDED
    assert Instance.objects.get(name="eve").state == State.STOPPED
    assert "unit-eve_web" not in engine.services or engine.services["unit-eve_web"].replicas == 0


def test_no_transaction_is_open_during_engine_and_edge_calls(controller, engine, edge, monkeypatch, converge,
                                                              run):
    """SQLite has one writer: a transaction around an engine call (up to a minute) locks out the UI and API."""
    seen = []
    real_check, real_probe = engine._check, edge.probe

    def check(call):
        seen.append((call, connection.in_atomic_block))
        return real_check(call)

    def probe(domain, path):
        seen.append(("probe", connection.in_atomic_block))
        return real_probe(domain, path)

    monkeypatch.setattr(engine, "_check", check)
    monkeypatch.setattr(edge, "probe", probe)
    engine.fail_jobs.add("unit-eve_setup")
    engine.logs["unit-eve_setup"] = ["boom"]
    run(controller, services.create_instance(LOCAL, "eve", "demo"))  # fails: logs are read
    engine.fail_jobs.clear()
    for action in (services.start, services.restart, lambda a, n: services.new_admin_password(a, n)[0],
                   services.stop, services.erase):
        action(LOCAL, "eve")
        converge(controller)
    assert any(call.startswith("service_logs") for call, _ in seen)  # the failure's log tail
    assert any(call == "probe" for call, _ in seen)
    assert {call for call, in_atomic in seen if in_atomic} == set()


def test_an_instance_committed_during_a_pass_is_not_failed(controller, engine, converge):
    """Whenever in a pass an instance and its create are committed, the create runs: it never fails as gone."""
    controller.pass_once()  # the edge comes up

    def create(name):
        try:
            services.create_instance(LOCAL, name, "demo")
        finally:
            connection.close()

    for position in range(1, 4):  # every gap between the reads of an idle pass
        name = f"race{position}"
        queries = []

        def wrapper(execute, sql, params, many, context, position=position, name=name, queries=queries):
            result = execute(sql, params, many, context)
            if connection.in_atomic_block or sql.startswith("BEGIN"):  # another writer waits for this one
                return result
            queries.append(sql)
            if len(queries) == position:  # committed by another connection, as the API does
                creator = threading.Thread(target=create, args=(name,))
                creator.start()
                creator.join()
            return result

        with connection.execute_wrapper(wrapper):
            controller.pass_once()
        assert len(queries) >= position
        converge(controller)
        op = Operation.objects.get(instance_name=name)
        assert op.state == OpState.SUCCEEDED, (position, op.error)
        assert Instance.objects.get(name=name).state == State.RUNNING


# -- failures ------------------------------------------------------------------------------------


def test_failing_setup_job_fails_the_operation(controller, engine, run):
    engine.fail_jobs.add("unit-eve_setup")
    engine.logs["unit-eve_setup"] = ["connecting to db", "FATAL: database is on fire"]
    op = run(controller, services.create_instance(LOCAL, "eve", "demo"))

    assert op.state == OpState.FAILED
    assert "setup job setup failed" in op.error
    assert "non-zero exit" in op.error
    assert "database is on fire" in op.error
    assert {s["name"]: s["state"] for s in op.steps}["prepare"] == "done"
    assert "failed" in {s["state"] for s in op.steps}
    instance = Instance.objects.get(name="eve")
    assert instance.state == State.ERROR
    assert "setup job setup failed" in instance.error
    # the web service was never started
    assert "unit-eve_web" not in engine.services


def test_failing_step_is_the_one_marked_failed(controller, engine, run):
    engine.fail_jobs.add("unit-eve_setup")
    op = run(controller, services.create_instance(LOCAL, "eve", "demo"))
    states = {s["name"]: s["state"] for s in op.steps}
    assert states["deploy:setup"] == "done"
    assert states["wait:setup"] == "failed"


def test_operation_of_a_vanished_instance_fails(controller):
    op = Operation.objects.create(instance=None, instance_name="ghost", kind="start")
    controller.pass_once()
    op.refresh_from_db()
    assert op.state == OpState.FAILED
    assert "gone" in op.error


@pytest.mark.parametrize("passes_with_a", [1, 2, 3, 4])
def test_replaced_controller_finishes_without_duplicates(engine, edge, settings, passes_with_a, run):
    applied = []
    real_apply = engine.apply_service

    def recording_apply(spec, current):
        changed = real_apply(spec, current)
        if changed:
            applied.append(spec.name)
        return changed

    engine.apply_service = recording_apply
    first = Controller(engine, edge, settings)
    first.heartbeat()
    op = services.create_instance(LOCAL, "eve", "demo")
    for _ in range(passes_with_a):
        first.pass_once()
    op.refresh_from_db()
    assert op.state in ACTIVE  # it is really cut off in the middle

    second_edge = FakeEdge(engine)
    second = Controller(engine, second_edge, settings)
    op = run(second, op)
    assert op.state == OpState.SUCCEEDED, op.error

    assert objects_of(engine, "eve")["services"] == DEMO_SERVICES
    creations = [c for c in engine.calls if c.startswith("create_")]
    assert len(creations) == len(set(creations)), creations
    # every instance service was created once; the setup job did not run twice
    assert sorted(n for n in applied if n.startswith("unit-eve_")) == sorted(DEMO_SERVICES)
    # the instance's three and the edge's (besides the mail relay's configuration and queue)
    assert len([s for s in engine.secrets if not s.startswith("unit-mail-")]) == 3
    assert len([v for v in engine.volumes if not v.startswith("unit-mail-")]) == 3
    assert Operation.objects.count() == 1
    assert second_edge.probe("eve.localhost", "/health") == 200


def test_observation_is_one_bulk_call_per_pass(controller, engine, converge):
    names = [f"ev{i}" for i in range(5)]
    for name in names:
        services.create_instance(LOCAL, name, "demo")
    controller.pass_once()  # the edge comes up
    engine.calls.clear()
    controller.pass_once()
    assert engine.calls.count("observe") == 1
    assert {op.state for op in Operation.objects.all()} == {OpState.RUNNING}

    converge(controller)
    assert all(i.state == State.RUNNING for i in Instance.objects.all())
    engine.calls.clear()
    controller.pass_once()
    assert engine.calls.count("observe") == 1
    # a quiet pass touches no instance at all
    assert not [c for c in engine.calls if any(f"unit-{n}_" in c for n in names)], engine.calls


def test_engine_down_before_a_pass_propagates(controller, engine, run):
    op = services.create_instance(LOCAL, "eve", "demo")
    engine.down = True
    with pytest.raises(EngineUnavailable):
        controller.pass_once()
    op.refresh_from_db()
    assert op.state == OpState.PENDING
    engine.down = False
    assert run(controller, op).state == OpState.SUCCEEDED


def test_engine_down_during_a_pass_propagates_and_leaves_the_operation_unfinished(
    controller, engine, monkeypatch, run
):
    op = services.create_instance(LOCAL, "eve", "demo")
    controller.pass_once()  # the edge comes up
    real_observe = engine.observe

    def observe_then_fall_over(prefix):
        obs = real_observe(prefix)
        engine.down = True
        return obs

    monkeypatch.setattr(engine, "observe", observe_then_fall_over)
    with pytest.raises(EngineUnavailable):
        controller.pass_once()
    op.refresh_from_db()
    assert op.state in ACTIVE
    # an outage of the engine is nobody's fault: no per-instance backoff
    assert op.attempts == 0
    assert op.next_attempt_at <= timezone.now()
    assert Instance.objects.get(name="eve").state != State.ERROR

    monkeypatch.setattr(engine, "observe", real_observe)
    engine.down = False
    op = run(controller, op)
    assert op.state == OpState.SUCCEEDED, op.error
    assert Instance.objects.get(name="eve").state == State.RUNNING


def test_one_failing_instance_backs_off_alone(controller, engine, monkeypatch, run, converge):
    real_apply = engine.apply_service

    def apply(spec, current):
        if spec.name.startswith("unit-bad_"):
            raise EngineError("the engine refused unit-bad")
        return real_apply(spec, current)

    monkeypatch.setattr(engine, "apply_service", apply)
    bad = services.create_instance(LOCAL, "bad", "demo")
    good = services.create_instance(LOCAL, "good", "demo")
    converge(controller, until=lambda: Operation.objects.get(pk=good.pk).done)

    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.state == OpState.SUCCEEDED, good.error
    assert Instance.objects.get(name="good").state == State.RUNNING
    assert bad.state in ACTIVE
    # tried once, then left alone for its backoff while the good one went on
    assert bad.attempts == 1
    assert bad.next_attempt_at > timezone.now()
    assert "the engine refused unit-bad" in bad.error
    assert "retrying" in bad.error
    assert Instance.objects.get(name="bad").state != State.ERROR

    # the engine takes it again, and the backoff has run out: it converges
    monkeypatch.setattr(engine, "apply_service", real_apply)
    Operation.objects.filter(pk=bad.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    bad = run(controller, bad)
    assert bad.state == OpState.SUCCEEDED, bad.error
    assert Instance.objects.get(name="bad").state == State.RUNNING


def test_backoff_gives_up_after_max_attempts(controller, engine, monkeypatch):
    def refuse(spec, current):
        raise EngineError("no")

    monkeypatch.setattr(engine, "apply_service", refuse)
    op = services.create_instance(LOCAL, "eve", "demo")
    Operation.objects.filter(pk=op.pk).update(attempts=ops.MAX_ATTEMPTS - 1)
    controller.pass_once()
    op.refresh_from_db()
    assert op.state == OpState.FAILED
    assert op.error.startswith("no")
    assert Instance.objects.get(name="eve").state == State.ERROR


def test_backoff_delay_grows(controller, engine, monkeypatch):
    def refuse(spec, current):
        raise EngineError("no")

    monkeypatch.setattr(engine, "apply_service", refuse)
    op = services.create_instance(LOCAL, "eve", "demo")
    delays = []
    for _ in range(3):
        before = timezone.now()
        controller.pass_once()
        op.refresh_from_db()
        delays.append((op.next_attempt_at - before).total_seconds())
        Operation.objects.filter(pk=op.pk).update(next_attempt_at=timezone.now())
    assert op.attempts == 3
    assert delays[0] < delays[1] < delays[2] <= 60


# -- drift ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["web", "db", "redis"])
def test_missing_service_is_repaired(controller, engine, edge, running_instance, run, service):
    running_instance("eve")
    volume = engine.volumes["unit-eve_db"]
    del engine.services[f"unit-eve_{service}"]

    controller.pass_once()
    repair = Operation.objects.get(instance_name="eve", kind="repair")
    assert repair.state in ACTIVE
    repair = run(controller, repair)
    assert repair.state == OpState.SUCCEEDED, repair.error
    assert objects_of(engine, "eve")["services"] == DEMO_SERVICES
    assert engine.volumes["unit-eve_db"] is volume
    assert Instance.objects.get(name="eve").state == State.RUNNING
    assert edge.probe("eve.localhost", "/health") == 200
    # once is enough
    for _ in range(3):
        controller.pass_once()
    assert Operation.objects.filter(kind="repair").count() == 1


def test_no_repair_without_drift(controller, running_instance):
    """The finished setup job is not a service that has to stay."""
    running_instance("eve")
    for _ in range(3):
        controller.pass_once()
    assert list(Operation.objects.values_list("kind", flat=True)) == ["create"]


def test_no_repair_of_a_stopped_instance(controller, engine, running_instance, run):
    running_instance("eve")
    run(controller, services.stop(LOCAL, "eve"))
    del engine.services["unit-eve_web"]
    for _ in range(3):
        controller.pass_once()
    assert not Operation.objects.filter(kind="repair").exists()


# -- heartbeat -----------------------------------------------------------------------------------


def test_every_pass_beats_the_heart_and_records_the_edge_config(engine, edge, settings, converge):
    ctl = Controller(engine, edge, settings)
    assert not ControlPlane.objects.exists()
    with pytest.raises(ControlPlaneDown):
        services.require_control_plane()
    converge(ctl, until=lambda: bool(ctl.edge_state.applied))
    services.require_control_plane()
    beat = ControlPlane.objects.get(pk=1)
    assert beat.edge_config == ctl.edge_state.applied["status"]
    ctl.pass_once()
    assert ControlPlane.objects.get(pk=1).beat_at > beat.beat_at


def test_an_instance_created_during_a_pass_is_not_taken_for_gone(controller, engine):
    """Parallel creates: the pass read the instances before this one was made, its operations after."""
    op = services.create_instance(LOCAL, "eve", "demo")
    controller._advance_operations([op], engine.observe("unit"), instances={})
    op.refresh_from_db()
    assert op.state != OpState.FAILED, op.error


def test_a_new_controller_rolls_services_an_older_hafen_made(engine, edge, settings, running_instance, run):
    """After an upgrade of hafen, running instances get what this version renders (here: the web service
    still on a network of an older layout), once, through a repair."""
    running_instance("eve")
    old = engine.services["unit-eve_web"]
    engine.services["unit-eve_web"] = dataclasses.replace(old, networks=old.networks[:1], env={**old.env, "X": "1"})
    upgraded = Controller(engine, edge, settings)
    upgraded.heartbeat()
    upgraded.pass_once()
    repair = Operation.objects.get(instance_name="eve", kind="repair")
    assert run(upgraded, repair).state == OpState.SUCCEEDED, repair.error
    assert engine.services["unit-eve_web"].digest() == old.digest()
    for _ in range(3):
        upgraded.pass_once()
    assert Operation.objects.filter(kind="repair").count() == 1


def test_scale_to_zero_lets_the_edge_go_before_the_web_stops(controller, engine, edge, running_instance, run):
    running_instance("eve")
    services.scale(LOCAL, "eve", 0)
    op = Operation.objects.get(kind="scale")
    controller.pass_once()
    op.refresh_from_db()
    assert [s["name"] for s in op.steps] == ["route", "deploy:web", "wait:web"]
    assert run(controller, op).state == OpState.SUCCEEDED, op.error
    network = naming.instance_edge_network("unit", "eve")
    assert network in engine.networks
    assert not any(network in nets for nets in engine.edge_containers("unit").values())


def test_the_health_endpoint_says_how_long_the_last_pass_took(controller, running_instance):
    from django.test import Client

    running_instance("ant")
    controller.pass_once()
    shown = Client().get("/healthz").json()["controller"]
    assert shown["running"] and 0 < shown["pass_seconds"] < 5
