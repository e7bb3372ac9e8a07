"""Fleet rollouts as the service layer plans them and the controller runs them, on the fake engine."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hafen.access.models import Organisation
from hafen.access.policy import Actor
from hafen.errors import Conflict, Forbidden, InvalidInput
from hafen.instances import rollouts, services
from hafen.instances.models import Instance, ItemState, Operation, Rollout, RolloutState
from tests.unit.test_updates import SmokeRestic

LOCAL = Actor.local()
V2 = "hafen/demo:2.0"


@pytest.fixture
def fleet(engine, running_instance):
    engine.job_output = SmokeRestic()
    for name in ("ant", "bee", "cat", "dog", "eel"):
        running_instance(name)
    return engine


def converge(controller, max_passes=300, until=None):
    from tests.unit.conftest import converge as run

    return run(controller, max_passes=max_passes, until=until)


def ended(rollout):
    return lambda: Rollout.objects.get(pk=rollout.pk).state not in rollouts.ACTIVE


def items(rollout):
    return {i["instance"]: i for i in rollouts.describe(Rollout.objects.get(pk=rollout.pk))["items"]}


def updated_order():
    return [op.instance_name for op in Operation.objects.filter(kind="update").order_by("created_at", "id")]


def test_canaries_first_then_batches_in_their_order(controller, fleet):
    rollout = rollouts.create(LOCAL, "demo", "2.0", canary=1, canaries=["dog"], batch=2)
    planned = items(rollout)
    assert [(n, i["wave"], i["canary"]) for n, i in planned.items()] == [
        ("dog", 0, True), ("ant", 1, False), ("bee", 1, False), ("cat", 2, False), ("eel", 2, False)]
    converge(controller, until=ended(rollout))
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.SUCCEEDED, rollout.error
    assert updated_order()[0] == "dog" and set(updated_order()[1:3]) == {"ant", "bee"}
    assert all(i.version == "2.0" for i in Instance.objects.all())
    assert {i["state"] for i in items(rollout).values()} == {ItemState.UPDATED}


def test_a_wave_starts_only_when_the_one_before_is_done(controller, fleet):
    fleet.hold.add("unit-dog_setup")  # the canary's migration takes its time
    rollout = rollouts.create(LOCAL, "demo", "2.0", canaries=["dog"], batch=4)
    for _ in range(15):
        controller.pass_once()
    assert updated_order() == ["dog"]
    fleet.hold.clear()
    converge(controller, until=ended(rollout))
    assert len(updated_order()) == 5


def test_the_first_failure_stops_the_rollout_and_nothing_else_is_touched(controller, fleet):
    fleet.broken_images[fleet.image_id(V2)] = "job"
    rollout = rollouts.create(LOCAL, "demo", "2.0", canary=1, batch=2)
    converge(controller, until=ended(rollout))
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.FAILED and rollout.error.startswith("ant: update to 2.0 failed")
    states = {n: i["state"] for n, i in items(rollout).items()}
    assert states == {"ant": ItemState.ROLLED_BACK, "bee": ItemState.NOT_TOUCHED, "cat": ItemState.NOT_TOUCHED,
                      "dog": ItemState.NOT_TOUCHED, "eel": ItemState.NOT_TOUCHED}
    assert updated_order() == ["ant"]
    assert {i.version for i in Instance.objects.all()} == {"1.0"}  # the report: which instance runs what
    assert items(rollout)["ant"]["version"] == "1.0"


def test_skipped_instances_are_reported_and_do_not_stop_it(controller, fleet):
    services.lock(LOCAL, "bee", ["update"], "the assembly runs")
    services.stop(LOCAL, "cat")
    converge(controller)
    rollout = rollouts.create(LOCAL, "demo", "2.0", canary=1, batch=5)
    converge(controller, until=ended(rollout))
    rollout.refresh_from_db()
    found = items(rollout)
    assert rollout.state == RolloutState.SUCCEEDED
    assert found["bee"]["state"] == ItemState.SKIPPED and "the assembly runs" in found["bee"]["message"]
    assert found["cat"]["state"] == ItemState.SKIPPED and "is stopped" in found["cat"]["message"]
    assert Instance.objects.get(name="bee").version == "1.0" and Instance.objects.get(name="eel").version == "2.0"


def test_an_instance_with_an_event_in_progress_or_about_to_begin_is_skipped_and_reported(controller, fleet):
    from hafen.instances import calendar

    now = timezone.now()
    calendar.add(LOCAL, "dog", start=now - timedelta(minutes=5), end=now + timedelta(hours=2), participants=40,
                 title="Spring assembly")
    calendar.add(LOCAL, "eel", start=now + timedelta(minutes=20), end=now + timedelta(hours=1), participants=40)
    calendar.add(LOCAL, "bee", start=now + timedelta(hours=5), end=now + timedelta(hours=6), participants=40)
    converge(controller)
    rollout = rollouts.create(LOCAL, "demo", "2.0", canary=1, batch=5)
    converge(controller, until=ended(rollout))
    found = items(rollout)
    assert found["dog"]["state"] == ItemState.SKIPPED and "Spring assembly" in found["dog"]["message"]
    assert found["eel"]["state"] == ItemState.SKIPPED and "about to begin" in found["eel"]["message"]
    assert found["bee"]["state"] == ItemState.UPDATED  # its event is hours away
    assert Instance.objects.get(name="dog").version == "1.0"


def test_a_scheduled_rollout_waits_for_its_time_and_an_organisations_window(controller, fleet, monkeypatch):
    acme = Organisation.objects.create(slug="acme", name="Acme")
    Instance.objects.filter(name="eel").update(organisation=acme)
    rollouts.set_window(LOCAL, "acme", "0 3 * * *", 60)
    later = rollouts.create(LOCAL, "demo", "2.0", canary=0, batch=5, start_at=timezone.now() + timedelta(hours=1))
    for _ in range(3):
        controller.pass_once()
    assert Rollout.objects.get(pk=later.pk).state == RolloutState.SCHEDULED and not updated_order()

    Rollout.objects.filter(pk=later.pk).update(start_at=timezone.now())
    opens = "hafen.controller.rollouts.schedule.window_open"
    monkeypatch.setattr(opens, lambda cron, minutes, now: False)  # 03:00 is not now
    converge(controller, until=lambda: len(updated_order()) == 4 and not Operation.objects.filter(
        kind="update", state__in=("pending", "running")).exists())
    waiting = items(later)["eel"]
    assert waiting["state"] == ItemState.PENDING and "update window of acme" in waiting["message"]
    assert Rollout.objects.get(pk=later.pk).state == RolloutState.RUNNING
    monkeypatch.setattr(opens, lambda cron, minutes, now: True)
    converge(controller, until=ended(later))
    assert Instance.objects.get(name="eel").version == "2.0"


def test_pause_resume_and_cancel(controller, fleet):
    rollout = rollouts.create(LOCAL, "demo", "2.0", canary=1, batch=1)
    rollouts.pause(LOCAL, rollout.pk)
    for _ in range(5):
        controller.pass_once()
    assert updated_order() == []
    with pytest.raises(Conflict, match="is paused; it cannot be paused"):
        rollouts.pause(LOCAL, rollout.pk)
    rollouts.resume(LOCAL, rollout.pk)
    converge(controller, until=lambda: len(updated_order()) == 2)
    rollouts.cancel(LOCAL, rollout.pk)
    converge(controller)  # the update under way finishes
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.CANCELLED and len(updated_order()) == 2
    assert sum(1 for i in items(rollout).values() if i["state"] == ItemState.NOT_TOUCHED) == 3
    with pytest.raises(Conflict, match="cancelled"):
        rollouts.resume(LOCAL, rollout.pk)


def test_what_a_rollout_refuses(controller, fleet, people):
    with pytest.raises(InvalidInput, match="no version '9.9'"):
        rollouts.create(LOCAL, "demo", "9.9")
    with pytest.raises(InvalidInput, match="--batch 1 or more"):
        rollouts.create(LOCAL, "demo", "2.0", batch=0)
    with pytest.raises(InvalidInput, match="named zzz"):
        rollouts.create(LOCAL, "demo", "2.0", canaries=["zzz"])
    with pytest.raises(Conflict, match="needs 1.0"):
        rollouts.create(LOCAL, "demo", "1.0")
    rollouts.create(LOCAL, "demo", "2.0")
    with pytest.raises(Conflict, match="another rollout"):
        rollouts.create(LOCAL, "demo", "2.0")
    with pytest.raises(Forbidden):
        rollouts.create(people.actor("member"), "demo", "2.0", organisation="acme")
    with pytest.raises(InvalidInput, match="name the organisation"):
        rollouts.create(people.actor("admin"), "demo", "2.0")
    assert Rollout.objects.count() == 1


def test_an_organisations_admin_rolls_out_over_its_own_instances_only(controller, fleet, people):
    services.create_instance(people.actor("admin"), "acme-1", "demo")
    converge(controller)
    rollout = rollouts.create(people.actor("admin"), "demo", "2.0", organisation="acme")
    assert list(items(rollout)) == ["acme-1"]
    converge(controller, until=ended(rollout))
    assert Instance.objects.get(name="acme-1").version == "2.0" and Instance.objects.get(name="ant").version == "1.0"
    assert rollouts.listing(people.actor("admin")) == [Rollout.objects.get(pk=rollout.pk)]
    assert rollouts.listing(people.actor("outsider")) == []


def test_a_read_scope_operator_can_neither_create_nor_steer_a_rollout(controller, fleet, people):
    reader = Actor(user=people.users["operator"], via="api", scope="read")
    with pytest.raises(Forbidden, match="read scope"):
        rollouts.create(reader, "demo", "2.0")
    rollout = rollouts.create(LOCAL, "demo", "2.0")
    for control in (rollouts.pause, rollouts.cancel):
        with pytest.raises(Forbidden):
            control(reader, rollout.pk)
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.SCHEDULED


def test_updates_under_way_when_the_rollout_ends_are_still_recorded(controller, fleet):
    fleet.broken_images[fleet.image_id(V2)] = "job"
    rollout = rollouts.create(LOCAL, "demo", "2.0", canary=0, batch=3)  # three updates at once, all fail
    converge(controller)
    rollout.refresh_from_db()
    states = sorted(i["state"] for i in items(rollout).values())
    assert rollout.state == RolloutState.FAILED
    assert states == [ItemState.NOT_TOUCHED, ItemState.NOT_TOUCHED] + [ItemState.ROLLED_BACK] * 3


def test_a_rollout_resumed_before_its_time_waits_for_it(controller, fleet):
    rollout = rollouts.create(LOCAL, "demo", "2.0", start_at=timezone.now() + timedelta(hours=2))
    rollouts.pause(LOCAL, rollout.pk)
    assert rollouts.resume(LOCAL, rollout.pk).state == RolloutState.SCHEDULED
    controller.pass_once()
    assert not updated_order()
