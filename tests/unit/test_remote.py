"""The CLI's remote backend against the real API (in-process over WSGI): same shapes, same errors."""

import httpx
import pytest
from django.core.wsgi import get_wsgi_application

from hafen.backends.local import LocalBackend
from hafen.backends.remote import RemoteBackend
from hafen.errors import Conflict, ControlPlaneDown, Forbidden, InvalidInput, NotFound, StillRunning, Unauthenticated


@pytest.fixture
def world(people, running_instance, controller):
    running_instance("eve", organisation="acme")
    return people


def remote(token: str) -> RemoteBackend:
    return RemoteBackend("http://testserver", token, transport=httpx.WSGITransport(app=get_wsgi_application()))


def test_remote_and_local_backends_agree(world):
    far, near = remote(world.tokens["operator"]), LocalBackend()
    assert far.instances() == near.instances()
    near.lock("eve", ["erase"], "kept for the record")
    assert far.show("eve") == near.show("eve")
    assert far.audit() == near.audit()
    assert far.credentials("eve") == near.credentials("eve")


def test_remote_actions_wait_and_audit(world, controller, converge):
    backend = remote(world.tokens["member"])
    op = backend.act("stop", "eve")
    converge(controller)
    assert backend.wait(op, lambda _: None)["state"] == "succeeded"
    assert backend.show("eve")["state"] == "stopped"
    entry = backend.audit(instance="eve", action="stop")[0]
    assert (entry["actor"], entry["via"], entry["result"]) == ("bob", "api", "ok")


def test_remote_errors_become_the_same_errors(world):
    member = remote(world.tokens["member"])
    with pytest.raises(NotFound):
        remote(world.tokens["outsider"]).show("eve")
    with pytest.raises(Forbidden):
        member.erase("eve")
    with pytest.raises(InvalidInput):
        member.scale("eve", -1)
    with pytest.raises(Unauthenticated):
        remote("hfn_wrong").instances()
    remote(world.tokens["admin"]).lock("eve", ["stop"], "board meeting")
    with pytest.raises(Conflict, match="board meeting"):
        member.act("stop", "eve")
    with pytest.raises(InvalidInput, match="--follow"):
        list(member.logs("eve", None, follow=True, since=None, tail=None))


def test_bad_url_or_missing_token_is_one_clear_error():
    with pytest.raises(InvalidInput, match="http"):
        RemoteBackend("ftp://x", "t")
    with pytest.raises(InvalidInput, match="token"):
        RemoteBackend("http://127.0.0.1:9", "")
    with pytest.raises(ControlPlaneDown, match="cannot reach"):
        RemoteBackend("http://127.0.0.1:9", "t", timeout=2).instances()


def _restart_on_a_held_step(world, engine, controller):
    engine.hold.add("unit-eve_web")
    backend = remote(world.tokens["admin"])
    op = backend.act("restart", "eve")
    for _ in range(3):
        controller.pass_once()
    return backend, op


def test_remote_wait_past_the_timeout_says_the_operation_is_still_running(world, engine, controller):
    backend, op = _restart_on_a_held_step(world, engine, controller)
    seen = []
    with pytest.raises(StillRunning, match=r"restart of eve is still running after 0 s \(now: wait for web\).*"
                                           r"`hafen show eve`"):
        backend.wait(op, seen.append, timeout=0.2)
    assert seen and seen[-1]["state"] == "running"


def test_remote_wait_past_the_timeout_with_a_stale_heartbeat_is_a_dead_control_plane(world, engine, controller):
    from datetime import timedelta

    from django.utils import timezone

    from hafen.instances.models import ControlPlane

    backend, op = _restart_on_a_held_step(world, engine, controller)
    ControlPlane.objects.update(beat_at=timezone.now() - timedelta(minutes=5))
    with pytest.raises(ControlPlaneDown, match="controller of http://testserver is not running"):
        backend.wait(op, lambda _: None, timeout=0.2)
