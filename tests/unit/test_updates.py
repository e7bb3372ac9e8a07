"""Updates as the service layer queues them and the controller runs them, on the fake engine.

The jobs' results come from the backup image's stand-in (`Restic`, test_backups.py), which also answers the
smoke job: the admin logs in, and the app says the version the instance is pinned to. A build broken on
purpose is an image whose jobs or services fail (`FakeEngine.broken_images`).
"""

import json

import pytest

from hafen.access.policy import Actor
from hafen.controller.loop import Controller
from hafen.errors import Conflict, Forbidden, InvalidInput, Locked
from hafen.instances import backups, services, updates
from hafen.instances.models import Instance, Operation, OpState, Snapshot, SnapshotStatus, State
from tests.unit.conftest import FakeEdge
from tests.unit.test_backups import Restic

LOCAL = Actor.local()
V1, V2 = "hafen/demo:1.0", "hafen/demo:2.0"


class SmokeRestic(Restic):
    """The stand-in, with the smoke job: the admin logs in, and the app says the version the instance is
    pinned to (`smoke` replaces what the next checks find)."""

    def __init__(self) -> None:
        super().__init__()
        self.smoke: dict[str, object] = {}

    def __call__(self, spec):
        if (spec.command or [])[:2] != ["hafen-backup", "smoke"]:
            return super().__call__(spec)
        instance = spec.labels["hafen.instance"]
        self.commands.append(f"smoke {instance}")
        version = Instance.objects.get(name=instance).version
        result = {"login": {"ok": True, "status": 200}, "version": {"found": version, "error": ""}, **self.smoke}
        return [f"HAFEN-RESULT {json.dumps(result)}"]


@pytest.fixture
def restic(engine, monkeypatch):
    from hafen.controller import backups as scheduler

    fake = SmokeRestic()
    engine.job_output = fake
    monkeypatch.setattr(scheduler, "INTERVAL", 0.0)
    return fake


@pytest.fixture
def eve(running_instance, restic):
    return running_instance("eve")


def converge(controller, max_passes=80, until=None):
    from tests.unit.conftest import converge as run

    return run(controller, max_passes=max_passes, until=until)


def web_image(engine, name="eve"):
    return engine.services[f"unit-{name}_web"].image


def rebuild(engine, tag, image):
    """As `hafen images build` after a change: the tag names a new image; the old one stays."""
    engine.image_ids[tag] = image


def finished(op):
    op.refresh_from_db()
    return op


# -- what is on offer ------------------------------------------------------------------------------


def test_an_instance_is_pinned_to_its_images_and_a_rebuild_does_not_reach_it_by_itself(
        controller, engine, eve, restic):
    pinned = Instance.objects.get(name="eve").images
    assert pinned[V1] == engine.image_id(V1) and "hafen/postgres:15" in pinned
    assert web_image(engine) == engine.image_id(V1)
    offer = updates.offers([eve])[eve.pk]
    assert offer.versions == ["2.0"] and not offer.rebuilt

    rebuild(engine, V1, "sha256:" + "b" * 64)
    services.restart(LOCAL, "eve")
    converge(controller)
    assert web_image(engine) == pinned[V1]  # a restart keeps the build it runs
    assert updates.offers([eve])[eve.pk].rebuilt
    listed = backups.describe_all([Instance.objects.get(name="eve")])[0]
    assert listed["update"] == {"available": True, "versions": ["2.0"], "rebuilt": True}


# -- a new version: backup, migration, switch ------------------------------------------------------


def test_an_update_to_a_new_version_backs_up_migrates_once_and_runs_it(controller, engine, eve, restic):
    op = updates.update(LOCAL, "eve", "2.0")
    assert op.params["plan"] == updates.MIGRATING
    converge(controller)
    assert finished(op).state == OpState.SUCCEEDED, op.error
    instance = Instance.objects.get(name="eve")
    assert instance.version == "2.0" and instance.state == State.RUNNING
    assert instance.images[V2] == engine.image_id(V2) and web_image(engine) == engine.image_id(V2)
    assert not instance.maintenance and instance.notice == ""
    steps = [s["name"] for s in op.steps if s["state"] == "done"]
    assert steps.index("stop-web") < steps.index("backup") < steps.index("switch") < steps.index("deploy:setup")
    assert not any(s["name"].startswith("rollback:") and s["state"] == "done" for s in op.steps)
    backup = Snapshot.objects.get(reason="update")
    assert backup.status == SnapshotStatus.OK and backup.version == "1.0"
    assert restic.commands.count("backup eve") == 1 and "restore eve" not in restic.commands
    assert restic.commands.count("smoke eve") == 1
    assert not [n for n in engine.services if "_smoke" in n or "_backup" in n]  # the jobs are gone
    assert updates.offers([instance])[instance.pk].available is False


def test_the_edge_shows_the_updating_page_while_the_web_is_down(controller, engine, edge, eve, restic):
    engine.hold.add("unit-eve_setup")  # the migration takes its time
    updates.update(LOCAL, "eve", "2.0")
    converge(controller, until=lambda: Instance.objects.get(name="eve").maintenance)
    for _ in range(6):
        controller.pass_once()
    domain = eve.domain
    assert controller.edge_state.mode(domain) == "updating"
    assert engine.services["unit-eve_web"].replicas == 0
    engine.hold.clear()
    converge(controller)
    assert controller.edge_state.mode(domain) == "starting"  # its page when the web does not answer


@pytest.mark.parametrize("broken", ["job", "service"])
def test_a_broken_version_is_rolled_back_to_the_old_one_with_the_data_of_the_backup(
        controller, engine, eve, restic, broken):
    restic.data["eve"] = {"tables": {"notes": 7}, "schema": "", "volumes": {}}
    engine.broken_images[engine.image_id(V2)] = broken
    op = updates.update(LOCAL, "eve", "2.0")
    converge(controller)
    op = finished(op)
    assert op.state == OpState.ROLLED_BACK
    assert ("setup" if broken == "job" else "service web") in op.error and "rolled back to 1.0" in op.error
    instance = Instance.objects.get(name="eve")
    assert instance.state == State.RUNNING and instance.version == "1.0" and not instance.maintenance
    assert web_image(engine) == engine.image_id(V1) and engine.services["unit-eve_web"].replicas == 1
    assert restic.commands.count("restore eve") == 1 and restic.data["eve"]["tables"] == {"notes": 7}
    rolled = [s["name"] for s in op.steps if s["state"] == "done" and s["name"].startswith("rollback:")]
    assert "rollback:restore" in rolled and "rollback:switch" in rolled


def test_a_failed_smoke_check_rolls_back(controller, engine, eve, restic):
    restic.smoke = {"version": {"found": "1.0", "error": ""}}  # the new web still says the old version
    op = updates.update(LOCAL, "eve", "2.0")
    converge(controller)
    assert finished(op).state == OpState.ROLLED_BACK
    assert "says it runs 1.0, not 2.0" in op.error
    assert Instance.objects.get(name="eve").version == "1.0"


def test_a_failed_backup_stops_the_update_before_anything_changed(controller, engine, eve, restic):
    restic.fail["backup"] = "the repository is unreachable: connection refused"
    engine.fail_jobs.add("unit-eve_backup")
    op = updates.update(LOCAL, "eve", "2.0")
    converge(controller)
    op = finished(op)
    assert op.state == OpState.FAILED and "did not start" in op.error and "unreachable" in op.error
    instance = Instance.objects.get(name="eve")
    assert instance.state == State.RUNNING and instance.version == "1.0" and not instance.maintenance
    assert engine.services["unit-eve_web"].replicas == 1 and web_image(engine) == engine.image_id(V1)
    assert "restore eve" not in restic.commands
    assert engine.image_id(V2) not in {s.image for s in engine.services.values()}
    assert Snapshot.objects.get(reason="update").status == SnapshotStatus.FAILED


@pytest.mark.parametrize("passes", [1, 3, 5, 8, 11, 14])
@pytest.mark.parametrize("broken", [False, True])
def test_a_controller_killed_during_an_update_finishes_it_or_its_rollback_once(
        controller, engine, settings, eve, restic, passes, broken):
    if broken:
        engine.broken_images[engine.image_id(V2)] = "job"
    op = updates.update(LOCAL, "eve", "2.0")
    for _ in range(passes):
        controller.pass_once()
    second = Controller(engine, FakeEdge(engine), settings)
    second.heartbeat()
    converge(second)
    op = finished(op)
    instance = Instance.objects.get(name="eve")
    assert op.state == (OpState.ROLLED_BACK if broken else OpState.SUCCEEDED), op.error
    assert instance.state == State.RUNNING and instance.version == ("1.0" if broken else "2.0")
    assert web_image(engine) == engine.image_id(V1 if broken else V2)
    assert restic.commands.count("backup eve") == 1
    assert restic.commands.count("restore eve") == (1 if broken else 0)


# -- a new build of the same version: rolling -------------------------------------------------------


def test_a_new_build_of_the_same_version_rolls_the_web_over_without_backup_or_page(
        controller, engine, edge, eve, restic):
    db_before = engine.services["unit-eve_db"].image
    rebuild(engine, V1, "sha256:" + "c" * 64)
    op = updates.update(LOCAL, "eve", "1.0")
    assert op.params["plan"] == updates.ROLLING and op.params["to_version"] == "1.0"
    converge(controller)
    assert finished(op).state == OpState.SUCCEEDED, op.error
    assert web_image(engine) == "sha256:" + "c" * 64 and engine.services["unit-eve_db"].image == db_before
    assert not Snapshot.objects.filter(reason="update").exists() and "backup eve" not in restic.commands
    assert not any(s["name"] in ("updating-on", "stop-web") for s in op.steps)
    assert restic.commands.count("smoke eve") == 1
    done = [s["name"] for s in op.steps if s["state"] == "done"]
    assert done.index("wait:candidate") < done.index("smoke") < done.index("switch") < done.index("deploy:web")
    assert "unit-eve_web-next" not in engine.services  # the candidate is gone


def test_a_new_build_that_fails_its_smoke_check_never_gets_traffic(controller, engine, eve, restic):
    old = web_image(engine)
    rebuild(engine, V1, "sha256:" + "f" * 64)
    restic.smoke = {"login": {"ok": False, "status": 500, "error": "HTTP 500"}}
    op = updates.update(LOCAL, "eve", "1.0")
    converge(controller)
    assert finished(op).state == OpState.FAILED and "cannot log in" in op.error
    assert web_image(engine) == old and "unit-eve_web-next" not in engine.services


def test_a_new_build_that_does_not_start_goes_back_to_the_old_build(controller, engine, eve, restic):
    old = web_image(engine)
    rebuild(engine, V1, "sha256:" + "d" * 64)
    engine.broken_images["sha256:" + "d" * 64] = "service"
    op = updates.update(LOCAL, "eve", "1.0")
    converge(controller)
    # the candidate never got healthy: the web service was never touched, nothing to roll back
    assert finished(op).state == OpState.FAILED and "did not start" in op.error and "web-next" in op.error
    assert web_image(engine) == old and Instance.objects.get(name="eve").images[V1] == old
    assert "unit-eve_web-next" not in engine.services and "smoke eve" not in restic.commands


# -- what is refused ---------------------------------------------------------------------------------


def test_what_an_update_refuses(controller, engine, eve, restic, snapshot):
    with pytest.raises(InvalidInput, match="no version '9.9'"):
        updates.update(LOCAL, "eve", "9.9")
    with pytest.raises(Conflict, match="newest build of Demo 1.0 already"):
        updates.update(LOCAL, "eve", "1.0")
    with pytest.raises(InvalidInput, match="only for going back"):
        updates.update(LOCAL, "eve", "2.0", restore="latest")
    engine.images.discard(V2)
    with pytest.raises(InvalidInput, match="not built"):
        updates.update(LOCAL, "eve", "2.0")
    engine.images.add(V2)
    services.lock(LOCAL, "eve", ["update"], "the assembly is tomorrow")
    with pytest.raises(Locked, match="assembly"):
        updates.update(LOCAL, "eve", "2.0")
    assert not Operation.objects.filter(kind="update").exists()


def test_a_downgrade_needs_a_backup_taken_on_the_older_version(controller, engine, eve, restic):
    backups.backup(LOCAL, "eve")
    converge(controller)
    on_1 = Snapshot.objects.get(reason="manual")
    op = updates.update(LOCAL, "eve", "2.0")
    converge(controller)
    assert finished(op).state == OpState.SUCCEEDED
    with pytest.raises(Conflict, match="needs --restore"):
        updates.update(LOCAL, "eve", "1.0")
    update_backup = Snapshot.objects.get(reason="update")  # taken on 1.0 too
    assert update_backup.version == "1.0"
    down = updates.update(LOCAL, "eve", "1.0", restore=on_1.restic_id[:8])
    converge(controller)
    assert finished(down).state == OpState.SUCCEEDED, down.error
    assert Instance.objects.get(name="eve").version == "1.0"
    assert restic.commands.count("restore eve") == 1


def test_admins_update_their_instances_and_members_cannot(people, controller, engine, restic):
    services.create_instance(people.actor("admin"), "acme-1", "demo")
    converge(controller)
    with pytest.raises(Forbidden):
        updates.update(people.actor("member"), "acme-1", "2.0")
    op = updates.update(people.actor("admin"), "acme-1", "2.0")
    converge(controller)
    assert finished(op).state == OpState.SUCCEEDED, op.error




def test_a_rollback_that_fails_leaves_an_error_that_a_start_clears(controller, engine, eve, restic):
    engine.broken_images[engine.image_id(V2)] = "job"
    restic.fail["restore"] = "the repository is unreachable: connection refused"
    engine.fail_jobs.add("unit-eve_restore")
    op = updates.update(LOCAL, "eve", "2.0")
    converge(controller)
    assert finished(op).state == OpState.FAILED and "restore failed" in op.error
    instance = Instance.objects.get(name="eve")
    assert instance.state == State.ERROR and instance.maintenance and instance.version == "1.0"
    engine.fail_jobs.clear()
    start = services.start(LOCAL, "eve")
    converge(controller)
    assert finished(start).state == OpState.SUCCEEDED, start.error
    instance = Instance.objects.get(name="eve")
    assert instance.state == State.RUNNING and not instance.maintenance and instance.notice == ""


def test_a_second_update_is_refused_and_a_stop_waits_for_the_update(controller, engine, eve, restic):
    first = updates.update(LOCAL, "eve", "2.0")
    controller.pass_once()
    with pytest.raises(Conflict, match="is under way"):
        updates.update(LOCAL, "eve", "2.0")
    stop = services.stop(LOCAL, "eve")  # an operator's stop while the update runs: it waits its turn
    converge(controller)
    assert finished(first).state == OpState.SUCCEEDED and finished(stop).state == OpState.SUCCEEDED
    instance = Instance.objects.get(name="eve")
    assert instance.state == State.STOPPED and instance.version == "2.0"
    assert engine.services["unit-eve_web"].replicas == 0


def test_updates_of_several_instances_run_at_once(controller, engine, running_instance, restic):
    for name in ("ada", "bob", "cyd"):
        running_instance(name)
    ops = [updates.update(LOCAL, name, "2.0") for name in ("ada", "bob", "cyd")]
    controller.pass_once()
    assert all(finished(op).state == OpState.RUNNING for op in ops)  # not one after the other
    converge(controller)
    assert [finished(op).state for op in ops] == [OpState.SUCCEEDED] * 3
    assert {i.version for i in Instance.objects.all()} == {"2.0"}


def test_pages_say_what_is_on_offer_without_asking_the_engine(controller, engine, eve, restic):
    rebuild(engine, V1, "sha256:" + "e" * 64)
    controller.pass_once()  # the controller sees the new build
    engine.down = True  # the engine does not answer: a page must not wait on it
    calls = len(engine.calls)
    shown = services.detail(LOCAL, Instance.objects.get(name="eve"))
    assert shown["update"] == {"available": True, "versions": ["2.0"], "rebuilt": True}
    assert backups.describe_all([Instance.objects.get(name="eve")])[0]["update"]["rebuilt"] is True
    assert len(engine.calls) == calls
