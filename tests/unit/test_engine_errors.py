"""Engine failures: how the SDK's errors map into hafen's tree, and what each kind does to an operation.

The mapping is tested at the SDK boundary (a stand-in Docker client whose methods raise what the
SDK raises); the controller's handling with the fake engine made to raise each kind of error.
"""

import json
import logging
import threading
import time
from unittest import mock

import docker.errors
import pytest
import requests
import urllib3.exceptions
from django.test import Client
from django.utils import timezone

from hafen.access.policy import Actor
from hafen.backends.remote import RemoteBackend
from hafen.controller import loop
from hafen.engine import swarm
from hafen.engine.base import ServiceSpec, ServiceState
from hafen.engine.swarm import SwarmEngine
from hafen.errors import (
    ControlPlaneDown,
    EngineConflict,
    EngineError,
    EngineNotFound,
    EngineRefused,
    EngineUnavailable,
    InvalidInput,
    from_status,
)
from hafen.instances import services
from hafen.instances.models import Instance, Operation, OpState, State

LOCAL = Actor.local()
ACTIVE = (OpState.PENDING, OpState.RUNNING)


# -- the mapping at the SDK boundary ------------------------------------------------------------


def sdk_error(status: int, message: str) -> docker.errors.APIError:
    """The exception the SDK raises for an engine answer with this status and message."""
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"message": message}).encode()
    try:
        docker.errors.create_api_error_from_http_exception(requests.exceptions.HTTPError(response=response))
    except docker.errors.APIError as exc:
        return exc
    raise AssertionError("the SDK raised nothing")


SPEC = ServiceSpec(name="hit-eve_web", image="hafen/demo:1.0")
CURRENT = ServiceState("hit-eve_web", labels={}, replicas=1, job=False)


@pytest.fixture
def client():
    return mock.Mock()


@pytest.fixture
def real(client):
    return SwarmEngine(client)


CASES = [
    # (what the SDK raises, hafen's class, temporary, words of the message)
    (docker.errors.NotFound("service hit-eve_web not found"), EngineNotFound, True, "not found"),
    (sdk_error(404, "service hit-eve_web not found"), EngineNotFound, True, "not found"),
    (sdk_error(409, "name conflicts with an existing object"), EngineConflict, True, "conflicts"),
    (sdk_error(400, "rpc error: code = InvalidArgument desc = secret hit-eve_x is in use by the following service"),
     EngineConflict, True, "in use"),
    (sdk_error(403, "error while removing network: network hit-eve_internal has active endpoints"),
     EngineConflict, True, "active endpoints"),
    (sdk_error(400, "rpc error: code = InvalidArgument desc = ContainerSpec: invalid mount target"),
     EngineRefused, False, "invalid mount target"),
    (sdk_error(500, "rpc error: code = Unknown desc = update out of sequence"), EngineError, True,
     "out of sequence"),
    (sdk_error(503, "This node is not a swarm manager."), EngineError, True, "swarm manager"),
    (requests.exceptions.ReadTimeout("UnixHTTPConnectionPool: Read timed out. (read timeout=20)"),
     EngineUnavailable, True, "did not answer within 20 s"),
    (requests.exceptions.ConnectionError("Connection aborted."), EngineUnavailable, True, "does not answer"),
    (docker.errors.DockerException("Error while fetching server API version"), EngineUnavailable, True,
     "does not answer"),
    (docker.errors.InvalidArgument("invalid port"), EngineRefused, False, "invalid port"),
]


@pytest.mark.parametrize("raised,cls,temporary,words", CASES, ids=[type(c[0]).__name__ + "-" + c[1].__name__
                                                                  for c in CASES])
def test_each_sdk_error_maps_to_one_class_of_hafen(client, real, raised, cls, temporary, words):
    client.services.get.side_effect = raised
    with pytest.raises(cls) as caught:
        real.apply_service(SPEC, CURRENT)
    assert type(caught.value) is cls
    assert caught.value.temporary is temporary
    message = str(caught.value)
    assert words in message
    # which call failed, except when nothing answers at all: then the one line says what to do
    assert message == swarm.UNAVAILABLE if words == "does not answer" else message.startswith("get service ")
    assert caught.value.__cause__ is raised


def test_every_call_of_the_engine_is_mapped(client, real):
    """Each of the engine's methods, its SDK call failing by a read timeout: nothing but EngineUnavailable."""
    timeout = requests.exceptions.ReadTimeout("Read timed out.")
    for sdk in (client.ping, client.info, client.api.services, client.networks.create, client.api.remove_network,
                client.volumes.create, client.api.remove_volume, client.secrets.create, client.api.remove_secret,
                client.services.create, client.api.remove_service, client.containers.list,
                client.api.inspect_image):
        sdk.side_effect = timeout
    calls = [
        real.ping, lambda: real.ensure_swarm("127.0.0.1"), lambda: real.observe("hit"),
        lambda: real.create_network("n", {}, internal=True), lambda: real.remove_network("n"),
        lambda: real.create_volume("v", {}), lambda: real.remove_volume("v"),
        lambda: real.create_secret("s", b"x", {}), lambda: real.remove_secret("s"),
        lambda: real.apply_service(SPEC, None), lambda: real.remove_service("hit-eve_web"),
        lambda: real.remove_stopped_containers({"a": "b"}), lambda: real.image_exists("hafen/demo:1.0"),
    ]
    for call in calls:
        with pytest.raises(EngineUnavailable):
            call()


def test_a_service_that_vanished_between_observe_and_update_is_temporary(client, real):
    client.services.get.side_effect = sdk_error(404, "service hit-eve_web not found")
    with pytest.raises(EngineNotFound) as caught:
        real.apply_service(SPEC, CURRENT)
    assert caught.value.temporary
    client.services.create.assert_not_called()


def test_removing_what_is_gone_already_is_no_error(client, real):
    gone = sdk_error(404, "no such object")
    for sdk in (client.api.remove_network, client.api.remove_volume, client.api.remove_secret,
                client.api.remove_service):
        sdk.side_effect = gone
    real.remove_network("n")
    real.remove_volume("v")
    real.remove_secret("s")
    real.remove_service("hit-eve_web")
    client.api.inspect_image.side_effect = docker.errors.ImageNotFound("No such image: hafen/demo:9")
    assert real.image_exists("hafen/demo:9") is False


def test_the_client_is_built_with_the_short_timeout_and_a_failed_connect_is_unavailable(monkeypatch):
    made = {}

    def from_env(**kwargs):
        made.update(kwargs)
        raise docker.errors.DockerException("Error while fetching server API version: Connection refused")

    monkeypatch.setattr(swarm.docker, "from_env", from_env)
    with pytest.raises(EngineUnavailable, match="does not answer"):
        SwarmEngine().ping()
    assert made == {"timeout": swarm.TIMEOUT}
    assert swarm.TIMEOUT < 60


def test_a_log_stream_that_breaks_off_is_unavailable_and_a_missing_service_not_found(client, real):
    def stream():
        yield b"first line\nsecond"
        raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")

    client.api.service_logs.return_value = stream()
    lines = real.service_logs("hit-eve_web")
    assert next(lines) == "first line"
    with pytest.raises(EngineUnavailable):
        next(lines)

    client.api.service_logs.side_effect = sdk_error(404, "service hit-eve_web not found")
    with pytest.raises(EngineNotFound, match="no service hit-eve_web"):
        list(real.service_logs("hit-eve_web"))


# -- what each kind does to an operation (fake engine) --------------------------------------------


def test_a_temporary_error_backs_off_and_the_operation_succeeds_later(controller, engine, converge):
    engine.fail("apply_service unit-eve_db", EngineNotFound("update service unit-eve_db: service not found"))
    op = services.create_instance(LOCAL, "eve", "demo")
    controller.pass_once()
    op.refresh_from_db()
    assert op.state in ACTIVE
    assert op.attempts == 1
    assert op.next_attempt_at > timezone.now()
    assert "service not found" in op.error and "retrying" in op.error

    Operation.objects.filter(pk=op.pk).update(next_attempt_at=timezone.now())
    converge(controller)
    op.refresh_from_db()
    assert op.state == OpState.SUCCEEDED, op.error
    assert Instance.objects.get(name="eve").state == State.RUNNING


def test_a_permanent_error_fails_the_operation_at_once_with_its_message(controller, engine):
    refusal = "create service unit-eve_db: rpc error: code = InvalidArgument desc = invalid mount target"
    engine.fail("apply_service unit-eve_db", EngineRefused(refusal))
    op = services.create_instance(LOCAL, "eve", "demo")
    controller.pass_once()
    op.refresh_from_db()
    assert op.state == OpState.FAILED
    assert op.error == refusal
    assert op.attempts == 0
    assert {s["name"]: s["state"] for s in op.steps}["deploy:db, redis"] == "failed"
    instance = Instance.objects.get(name="eve")
    assert (instance.state, instance.error) == (State.ERROR, refusal)


def test_an_unavailable_engine_stops_the_pass_without_charging_the_operation(controller, engine, converge):
    engine.fail("apply_service unit-eve_db", EngineUnavailable("the Docker engine did not answer within 20 s"),
                times=3)
    op = services.create_instance(LOCAL, "eve", "demo")
    for _ in range(3):
        with pytest.raises(EngineUnavailable):
            controller.pass_once()
        op.refresh_from_db()
        assert op.state in ACTIVE
        assert op.attempts == 0
        assert op.next_attempt_at <= timezone.now()
    converge(controller)
    op.refresh_from_db()
    assert op.state == OpState.SUCCEEDED, op.error


def test_an_unmapped_exception_is_an_internal_error_with_its_traceback_and_the_pass_goes_on(
    controller, engine, converge, caplog
):
    engine.fail("apply_service unit-bad_db", RuntimeError("boom"))
    bad = services.create_instance(LOCAL, "bad", "demo")
    good = services.create_instance(LOCAL, "good", "demo")
    with caplog.at_level(logging.ERROR, logger="hafen.controller"):
        converge(controller)
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.state == OpState.FAILED
    assert bad.error == "internal error: boom"
    assert good.state == OpState.SUCCEEDED, good.error
    [record] = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


def test_a_hafen_error_that_is_not_the_engines_fails_with_its_own_message(controller, engine):
    engine.fail("apply_service unit-eve_db", InvalidInput("the stack template names no image"))
    op = services.create_instance(LOCAL, "eve", "demo")
    controller.pass_once()
    op.refresh_from_db()
    assert (op.state, op.error) == (OpState.FAILED, "the stack template names no image")


def test_the_loop_lives_through_an_outage_and_an_unexpected_error(controller, engine, monkeypatch):
    """The real loop: observe fails twice for want of an engine, once for a bug; the create still ends."""
    monkeypatch.setattr(loop, "IDLE_INTERVAL", 0.01)
    engine.fail("observe", EngineUnavailable("the Docker engine does not answer"), times=2)
    engine.raises["observe"].append(RuntimeError("a bug in one pass"))
    op = services.create_instance(LOCAL, "eve", "demo")
    thread = threading.Thread(target=controller.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while Operation.objects.get(pk=op.pk).state in ACTIVE and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        controller.stop()
        thread.join(10)
    op.refresh_from_db()
    assert op.state == OpState.SUCCEEDED, op.error
    assert engine.calls.count("observe") > 3


# -- what the API answers ----------------------------------------------------------------------


@pytest.fixture
def eve(people, running_instance):
    running_instance("eve", organisation="acme")
    return people


def test_reads_answer_200_while_the_engine_is_down_and_engine_calls_503(eve, engine):
    client = Client()
    op = Operation.objects.filter(instance_name="eve").first()
    engine.down = True
    headers = eve.headers("operator")
    for path in ("/instances", "/instances/eve", "/instances/eve/operations", f"/operations/{op.id}",
                 "/instances/eve/locks", "/audit"):
        assert client.get("/api/v1" + path, **headers).status_code == 200, path

    for response in (
        client.post("/api/v1/instances", {"name": "neu", "app": "demo", "organisation": "acme"},
                    content_type="application/json", **headers),
        client.get("/api/v1/instances/eve/logs", **headers),
    ):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "engine_unavailable"
        assert "does not answer" in response.json()["error"]["message"]
        assert response["Retry-After"] == "10"
    assert not Instance.objects.filter(name="neu").exists()


def test_logs_of_a_service_that_is_not_there_are_a_conflict_not_an_engine_fault(eve, engine):
    del engine.services["unit-eve_web"]
    response = Client().get("/api/v1/instances/eve/logs", **eve.headers("operator"))
    assert response.status_code == 409
    assert "has no service web" in response.json()["error"]["message"]


def test_the_remote_cli_tells_an_engine_outage_from_a_control_plane_that_is_down(eve, engine):
    import httpx
    from django.core.wsgi import get_wsgi_application

    remote = RemoteBackend("http://testserver", eve.tokens["operator"],
                           transport=httpx.WSGITransport(app=get_wsgi_application()))
    engine.down = True
    with pytest.raises(EngineUnavailable) as caught:
        list(remote.logs("eve", None, follow=False, since=None, tail=10))
    assert caught.value.exit_code == 7
    assert from_status(503) is ControlPlaneDown
