"""The event calendar: floors from the participants table, the controller waking an instance before its
event and holding its replicas during it, the service layer, the CLI, the API and the capacity forecast."""

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.test import Client
from django.utils import timezone

from hafen.access.models import AuditEntry
from hafen.access.policy import Actor
from hafen.catalog import get_app
from hafen.errors import Forbidden, InvalidInput, NotFound
from hafen.instances import calendar, elastic
from hafen.instances import policy as p
from hafen.instances.models import Decision, Event, Instance, Operation, OpState, Sleep, State
from tests.unit.test_elastic import hafen, idle_for, settle

LOCAL = Actor.local()
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = (timezone.now() + timedelta(days=30)).date().isoformat()  # a day a month ahead, as text
LEAD = 1800


def event(start_in_min, end_in_min, participants, pk=1, title="Assembly"):
    return SimpleNamespace(pk=pk, title=title, participants=participants,
                           start_at=NOW + timedelta(minutes=start_in_min), end_at=NOW + timedelta(minutes=end_in_min))


def test_the_participants_table_gives_the_web_replicas():
    demo = get_app("demo")
    assert [demo.replicas_for(n) for n in (1, 50, 51, 200, 201, 1000, 50_000)] == [1, 1, 2, 2, 3, 3, 3]
    openslides = get_app("openslides")
    assert [openslides.replicas_for(n) for n in (80, 250, 900, 2500, 9000)] == [1, 2, 3, 4, 4]


def test_an_events_floor_holds_from_its_lead_to_its_end_and_the_biggest_wins():
    demo = get_app("demo")
    assert p.event_floor(demo, [event(31, 90, 300)], NOW, LEAD).replicas == 0  # not yet
    floor = p.event_floor(demo, [event(30, 90, 300)], NOW, LEAD)
    assert floor.replicas == 3 and floor.event_id == 1 and "300 participants" in floor.reason
    assert p.event_floor(demo, [event(-60, 0, 300)], NOW, LEAD).replicas == 0  # over
    both = p.event_floor(demo, [event(-10, 60, 100, pk=1), event(0, 30, 500, pk=2), event(-5, 5, 20, pk=3)], NOW,
                         LEAD)
    assert (both.replicas, both.event_id) == (3, 2)


@pytest.fixture
def planned(running_instance, access_log):
    instance = running_instance("eve")
    elastic.set_policy(LOCAL, "eve", idle="20s", deep_sleep="never")
    return instance


def plan(name, start_in, end_in, participants, title="Assembly"):
    now = timezone.now()
    return calendar.add(LOCAL, name, start=now + start_in, end=now + end_in, participants=participants, title=title)


def test_an_instance_wakes_before_its_event_runs_its_replicas_during_it_and_falls_back_after(
        planned, controller, converge, engine):
    idle_for("eve", 60)
    settle(controller, converge)
    assert Instance.objects.get(name="eve").state == State.SLEEPING
    assembly = plan("eve", timedelta(minutes=20), timedelta(hours=2), 150)
    settle(controller, converge)
    eve = Instance.objects.get(name="eve")
    assert (eve.state, eve.sleep, eve.floor_replicas) == (State.RUNNING, Sleep.AWAKE, 2)
    assert engine.services["unit-eve_web"].replicas == 2
    assert [d.action for d in Decision.objects.filter(instance=eve)][:2] == ["scale", "wake"]
    assert "150 participants" in Decision.objects.filter(instance=eve, action="wake").first().reason

    idle_for("eve", 600)  # nobody there yet: the event keeps it awake anyway
    settle(controller, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.AWAKE

    Event.objects.filter(pk=assembly.pk).update(start_at=timezone.now() - timedelta(hours=3),
                                                end_at=timezone.now() - timedelta(seconds=1))
    settle(controller, converge)  # over: its own replicas again, then the policy as before
    eve.refresh_from_db()
    assert eve.floor_replicas == 0
    assert Decision.objects.filter(instance=eve).first().action in ("scale", "sleep")
    settle(controller, converge)
    eve.refresh_from_db()
    assert eve.state == State.SLEEPING
    assert "event is over" in Decision.objects.filter(instance=eve, action="scale").first().reason


def test_a_big_event_gives_the_services_the_limits_of_a_larger_size_during_it_and_their_own_after(
        planned, controller, converge, engine, people):
    demo = get_app("demo")
    assert (demo.row_for(500).size, demo.larger_size("small", "medium"), demo.larger_size("large", "medium"),
            demo.larger_size("small", "")) == ("medium", "medium", "large", "small")
    small, medium = demo.sizes["small"], demo.sizes["medium"]
    assert small.db_cpus < medium.db_cpus  # what the test sees change
    before = engine.services["unit-eve_db"].nano_cpus
    assembly = plan("eve", timedelta(minutes=-5), timedelta(hours=1), 500)
    assert calendar.describe(assembly)["size"] == "medium"
    settle(controller, converge)
    eve = Instance.objects.get(name="eve")
    assert (eve.floor_replicas, eve.floor_size) == (3, "medium")
    assert engine.services["unit-eve_db"].nano_cpus == int(medium.db_cpus * 1e9) != before
    assert engine.services["unit-eve_web"].replicas == 3
    scale = Operation.objects.filter(instance=eve, kind="scale").first()
    assert scale.state == OpState.SUCCEEDED and [s["name"] for s in scale.steps] == [
        "deploy:db, redis", "wait:db, redis", "deploy:web", "wait:web", "route"]  # (its wait on a later pass)
    decision = Decision.objects.filter(instance=eve, action="scale").first()
    assert "the limits of size medium" in decision.reason and decision.numbers["size"] == "medium"
    from tests.unit.test_web_backups import client_for, page

    assert "with the limits of size medium" in page(client_for(people, "operator").get("/instances/eve"))

    Event.objects.filter(pk=assembly.pk).update(end_at=timezone.now() - timedelta(seconds=1))
    settle(controller, converge)
    eve.refresh_from_db()
    assert (eve.floor_replicas, eve.floor_size) == (0, "")
    assert engine.services["unit-eve_db"].nano_cpus == before
    assert "the limits of size small" in Decision.objects.filter(instance=eve, action="scale").first().reason


def test_a_bigger_replica_count_of_the_instance_is_kept_during_an_event(planned, controller, converge, engine):
    from hafen.instances import services

    services.scale(LOCAL, "eve", 3)
    converge(controller)
    plan("eve", timedelta(minutes=-5), timedelta(hours=1), 10)
    settle(controller, converge)
    assert engine.services["unit-eve_web"].replicas == 3


def test_adding_events_is_checked_audited_and_for_admins(running_instance, people):
    running_instance("ant", organisation="acme")
    now = timezone.now()
    admin, member = people.actor("admin"), people.actor("member")
    for start, end, participants, title, message in [
        (now + timedelta(hours=2), now + timedelta(hours=1), 10, "", "ends after it starts"),
        (now - timedelta(hours=2), now - timedelta(hours=1), 10, "", "over already"),
        (now, now + timedelta(days=15), 10, "", "at most 14 days"),
        (now, now + timedelta(hours=1), 0, "", "participants: 1 to"),
        (now, now + timedelta(hours=1), 10, "a\nb", "one line"),
        ("tomorrow", now + timedelta(hours=1), 10, "", "start: an ISO time"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            calendar.add(admin, "ant", start=start, end=end, participants=participants, title=title)
    with pytest.raises(Forbidden):
        calendar.add(member, "ant", start=now, end=now + timedelta(hours=1), participants=10)
    with pytest.raises(NotFound):
        calendar.add(people.actor("outsider"), "ant", start=now, end=now + timedelta(hours=1), participants=10)
    assert not Event.objects.exists()
    made = calendar.add(admin, "ant", start=f"{DAY}T09:00", end=f"{DAY}T12:00+01:00", participants=10)
    assert made.start_at == datetime.fromisoformat(f"{DAY}T09:00+00:00") and made.end_at.hour == 11
    assert [e.pk for e in calendar.coming(member)] == [made.pk]
    assert list(calendar.coming(people.actor("outsider"))) == []
    with pytest.raises(Forbidden):
        calendar.remove(member, "ant", made.pk)
    with pytest.raises(NotFound):
        calendar.remove(admin, "ant", made.pk + 1)
    calendar.remove(admin, "ant", made.pk)
    assert not Event.objects.exists()
    assert AuditEntry.objects.filter(action="policy").count() == 12


def test_the_event_commands(capsys, monkeypatch, running_instance, controller):
    running_instance("eve")
    code, out, _ = hafen(capsys, monkeypatch, "event", "add", "eve", "--start", f"{DAY}T09:00", "--end",
                         f"{DAY}T17:00", "--participants", "180", "--title", "Spring [bold]assembly")
    assert code == 0 and "180 participants, 2 web replica(s)" in out
    code, out, _ = hafen(capsys, monkeypatch, "event", "list")
    assert f"{DAY} 09:00" in out and "Spring [bold]assembly" in out
    [row] = json.loads(hafen(capsys, monkeypatch, "event", "list", "eve", "--json")[1])
    code, out, err = hafen(capsys, monkeypatch, "event", "add", "eve", "--start", "soon", "--end", f"{DAY}T17:00",
                           "--participants", "5")
    assert code == 2 and out == "" and err.startswith("error: start: an ISO time") and len(err.splitlines()) == 1
    code, out, _ = hafen(capsys, monkeypatch, "event", "remove", "eve", str(row["id"]))
    assert code == 0 and not Event.objects.exists()
    code, _, err = hafen(capsys, monkeypatch, "event", "remove", "eve", str(row["id"]))
    assert code == 3 and "has no event" in err


def api(people, role, method, path, body=None):
    kwargs = {"content_type": "application/json", **people.headers(role)}
    if body is not None:
        kwargs["data"] = json.dumps(body)
    return getattr(Client(), method)("/api/v1" + path, **kwargs)


def test_the_events_api_and_the_capacity_forecast(running_instance, people, engine):
    running_instance("ant", organisation="acme")
    running_instance("cat", organisation="globex")
    body = {"start_at": f"{DAY}T09:00", "end_at": f"{DAY}T18:00", "participants": 600, "title": "AGM"}
    assert api(people, "member", "post", "/instances/ant/events", body).status_code == 403
    bad = api(people, "admin", "post", "/instances/ant/events", {**body, "end_at": f"{DAY}T08:00"})
    assert bad.status_code == 400 and "ends after it starts" in bad.json()["error"]["message"]
    made = api(people, "admin", "post", "/instances/ant/events", body)
    assert made.status_code == 201 and made.json()["web_replicas"] == 3
    assert [e["instance"] for e in api(people, "member", "get", "/events").json()] == ["ant"]
    assert api(people, "outsider", "get", "/events").json() == []
    assert api(people, "outsider", "get", "/instances/ant/events").status_code == 404
    assert api(people, "admin", "get", "/capacity").status_code == 403
    soon = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=5)
    calendar.add(LOCAL, "cat", start=soon, end=soon + timedelta(hours=2), participants=5000)
    forecast = api(people, "operator", "get", "/capacity").json()
    assert len(forecast["hours"]) == 14 * 24 and forecast["capacity"]["memory_bytes"] > 0
    hours = {h["start"]: h for h in forecast["hours"]}
    base = forecast["hours"][0]["memory_bytes"]
    during = hours[soon.isoformat()]
    assert during["memory_bytes"] > base and during["events"]  # cat's event, at 3 replicas
    assert forecast["over"] == []
    for node in engine.node_states.values():
        node.memory_bytes = base + 1  # a swarm that holds what runs now, not the event
    forecast = calendar.forecast(LOCAL)
    over = set(forecast["over"])  # the hours of the event (and the one of its lead), no other
    assert {soon.isoformat(), (soon + timedelta(hours=1)).isoformat()} <= over
    assert (soon + timedelta(hours=3)).isoformat() not in over and len(over) <= 3
    assert api(people, "admin", "delete", f"/instances/ant/events/{made.json()['id']}").status_code == 204


def test_the_pages_plan_list_and_chart_events_and_warn_operators_of_hours_over_capacity(
        running_instance, people, engine):
    from tests.unit.test_web_backups import client_for, messages_of, page

    running_instance("ant", organisation="acme")
    admin, member, operator = (client_for(people, role) for role in ("admin", "member", "operator"))
    assert 'name="add-event"' not in page(member.get("/instances/ant"))
    response = admin.post("/instances/ant/events", {"start": f"{DAY}T09:00", "end": f"{DAY}T08:00",
                                                    "participants": "100"}, follow=True)
    assert any("ends after it starts" in m for m in messages_of(response)) and not Event.objects.exists()
    response = admin.post("/instances/ant/events", {"start": f"{DAY}T09:00", "end": f"{DAY}T17:00",
                                                    "participants": "many"}, follow=True)
    assert any("participants" in m for m in messages_of(response)) and not Event.objects.exists()
    response = admin.post("/instances/ant/events", {"start": f"{DAY}T09:00", "end": f"{DAY}T17:00",
                                                    "participants": "150", "title": "<b>AGM</b>"}, follow=True)
    assert "Event planned." in messages_of(response)
    assert "&lt;b&gt;AGM&lt;/b&gt;" in page(response) and f"{DAY} 09:00:00" in page(response)
    listing = page(member.get("/calendar"))
    assert 'id="coming-events"' in listing and "&lt;b&gt;AGM" in listing and 'id="forecast"' not in listing
    assert 'id="forecast"' in page(operator.get("/calendar")) and "<svg" in page(operator.get("/calendar"))
    assert 'id="over-capacity"' not in page(operator.get("/"))
    soon = timezone.now() + timedelta(hours=3)
    calendar.add(LOCAL, "ant", start=soon, end=soon + timedelta(hours=1), participants=900)
    for node in engine.node_states.values():
        node.memory_bytes = 1024**2  # far too small for anything
    assert 'id="over-capacity"' in page(operator.get("/"))
    assert 'class="bar-over"' in page(operator.get("/calendar"))
    assert 'id="over-capacity"' not in page(admin.get("/"))  # operators only
    event_id = Event.objects.first().pk
    assert member.post(f"/instances/ant/events/{event_id}/remove").status_code in (302, 403)
    assert Event.objects.filter(pk=event_id).exists()
    admin.post(f"/instances/ant/events/{event_id}/remove")
    assert not Event.objects.filter(pk=event_id).exists()


def test_a_time_out_of_range_is_refused_not_a_crash(running_instance, people):
    running_instance("ant", organisation="acme")
    bad = api(people, "admin", "post", "/instances/ant/events",
              {"start_at": "0001-01-01T00:00+05:00", "end_at": f"{DAY}T10:00", "participants": 5})
    assert bad.status_code == 400 and "out of range" in bad.json()["error"]["message"]
    assert not Event.objects.exists()
