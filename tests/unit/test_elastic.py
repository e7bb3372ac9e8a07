"""Sleep and wake: the policy, the decisions, the edge's access log, and the controller acting on them
(fake engine and edge; the access log is a real file the tests write as Caddy would)."""

import json
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from hafen import cli
from hafen.access.models import AuditEntry
from hafen.access.policy import Actor
from hafen.controller import loop
from hafen.controller.loop import Controller
from hafen.edge import report
from hafen.edge.activity import AccessLog
from hafen.edge.config import ACCESS_LOG
from hafen.engine.base import NodeState
from hafen.engine.fake import fake_address
from hafen.errors import Forbidden, InvalidInput, NotFound
from hafen.instances import backups, elastic, services, updates
from hafen.instances import policy as p
from hafen.instances.models import ControlPlane, Decision, Instance, Operation, OpState, Sleep, State

LOCAL = Actor.local()
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def policy(idle=1800, deep=86400):
    return p.Policy(idle=idle, deep_sleep=deep, sources={"idle": "installation", "deep_sleep": "installation"})


# -- durations and the policy's layers -----------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("20s", 20), ("30m", 1800), ("24h", 86400), ("2d", 172800),
                                               ("1h30m", 5400), ("never", None), (" Never ", None)])
def test_durations(text, seconds):
    assert p.parse_duration(text) == seconds
    if seconds is not None:
        assert p.parse_duration(p.format_duration(seconds)) == seconds


@pytest.mark.parametrize(("text", "seconds"), [("off", None), ("5s", 5), ("10s", 10), ("1m", 60), (" 30S ", 30)])
def test_hold_steps(text, seconds):
    assert p.parse_hold(text) == seconds
    assert p.shown("hold", seconds) == ("off" if seconds is None else p.format_duration(seconds))


@pytest.mark.parametrize("text", ["", "never", "7s", "0", "2m", "soon"])
def test_a_hold_that_is_no_step_of_the_edge_is_refused(text):
    with pytest.raises(InvalidInput, match=r"hold: off or one of 5s, 10s, 20s, 30s, 60s"):
        p.parse_hold(text)


@pytest.mark.parametrize("text", ["", "abc", "5s", "-20s", "0", "400d", "20 parsecs"])
def test_bad_durations_say_what_is_wrong(text):
    with pytest.raises(InvalidInput, match="idle"):
        p.parse_duration(text, "idle")


def test_the_policy_comes_from_the_instance_its_organisation_its_size_or_the_installation(
        running_instance, settings, people):
    small = running_instance("eve", organisation="acme")
    assert p.effective(small, settings).describe() == {
        "idle": {"value": "30m", "seconds": 1800, "number": None, "source": "installation"},
        "deep_sleep": {"value": "1d", "seconds": 86400, "number": None, "source": "installation"},
        "hold": {"value": "off", "seconds": None, "number": None, "source": "installation"},
        "min": {"value": "1", "seconds": None, "number": 1, "source": "installation"},
        "max": {"value": "off", "seconds": None, "number": None, "source": "installation"},
        "target_inflight": {"value": "10", "seconds": None, "number": 10, "source": "installation"},
        "target_cpu": {"value": "70%", "seconds": None, "number": 70, "source": "installation"}}
    large = running_instance("max", size="large")
    assert p.effective(large, settings).idle is None  # app.toml: a large event never falls asleep
    assert p.effective(large, settings).sources["idle"] == "size"
    people.acme.policy = {"idle": 3600}
    people.acme.save()
    small.refresh_from_db()
    assert (p.effective(small, settings).idle, p.effective(small, settings).sources["idle"]) == (3600, "organisation")
    elastic.set_policy(LOCAL, "eve", idle="20s", deep_sleep="never")
    small.refresh_from_db()
    mine = p.effective(small, settings)
    assert (mine.idle, mine.deep_sleep, mine.deep_after) == (20, None, None)
    assert (mine.sources["idle"], mine.sources["deep_sleep"]) == ("instance", "instance")
    assert mine.sources["max"] == "installation"
    elastic.set_policy(LOCAL, "eve", idle="default")
    small.refresh_from_db()
    assert p.effective(small, settings).sources["idle"] == "organisation"


# -- decisions -------------------------------------------------------------------------------------------


def test_an_instance_sleeps_after_its_idle_time_and_not_before():
    assert p.sleep_decision(policy(), Sleep.AWAKE, NOW - timedelta(minutes=29), 0, NOW) is None
    decision = p.sleep_decision(policy(), Sleep.AWAKE, NOW - timedelta(minutes=31), 0, NOW)
    assert decision is not None and decision.action == "sleep"
    assert decision.numbers["idle_s"] == 1860 and decision.numbers["idle_limit_s"] == 1800
    assert "31m" in decision.reason and "30m" in decision.reason


def test_an_open_request_or_websocket_or_never_keeps_it_awake():
    long_ago = NOW - timedelta(days=3)
    assert p.sleep_decision(policy(), Sleep.AWAKE, long_ago, 1, NOW) is None
    assert p.sleep_decision(policy(idle=None), Sleep.AWAKE, long_ago, 0, NOW) is None


def test_deep_sleep_after_its_time_also_straight_from_awake():
    assert p.sleep_decision(policy(), Sleep.LIGHT, NOW - timedelta(hours=23), 0, NOW) is None
    assert p.sleep_decision(policy(), Sleep.LIGHT, NOW - timedelta(hours=25), 0, NOW).action == "deep-sleep"
    assert p.sleep_decision(policy(), Sleep.AWAKE, NOW - timedelta(hours=25), 0, NOW).action == "deep-sleep"
    assert p.sleep_decision(policy(), Sleep.DEEP, NOW - timedelta(days=9), 0, NOW) is None
    assert p.sleep_decision(policy(deep=None), Sleep.LIGHT, NOW - timedelta(days=9), 0, NOW) is None
    # deep sleep is never sooner than sleep
    assert policy(idle=3600, deep=60).deep_after == 3600


def test_a_sleeper_wakes_on_a_request_after_it_fell_asleep_only():
    slept = NOW - timedelta(minutes=5)
    assert p.wake_decision(Sleep.LIGHT, slept, slept - timedelta(seconds=1)) is None
    assert p.wake_decision(Sleep.LIGHT, slept, None) is None
    assert p.wake_decision(Sleep.AWAKE, slept, NOW) is None
    assert p.wake_decision(Sleep.DEEP, slept, NOW).action == "wake"


# -- the access log ------------------------------------------------------------------------------------------


def line(host, ts, status=200):
    return json.dumps({"level": "info", "ts": ts, "logger": "http.log.access.hafen", "msg": "handled request",
                       "request": {"proto": "HTTP/1.1", "method": "GET", "host": host},
                       "duration": 0.01, "size": 2, "status": status}) + "\n"


def test_the_access_log_is_read_as_it_grows_rolls_over_and_from_both_files_after_a_restart(tmp_path):
    path = tmp_path / ACCESS_LOG
    reader = AccessLog(path)
    assert reader.read() == {}  # no file yet
    path.write_text(line("a.test", 100.0) + line("b.test:8080", 101.0) + "not json\n" + line("a.test", 102.0)
                    + line("a.test", 103.0)[:20])
    assert reader.read() == {"a.test": 102.0, "b.test": 101.0}
    with path.open("a") as f:
        f.write(line("a.test", 103.0)[20:])
    assert reader.read() == {"a.test": 103.0}  # the unfinished line, completed
    path.rename(tmp_path / "access-2026-11-26T12-00-00.000.log")  # Caddy rolls over...
    with (tmp_path / "access-2026-11-26T12-00-00.000.log").open("a") as f:
        f.write(line("c.test", 104.0))  # ...after its last line to the old file
    path.write_text(line("d.test", 105.0))
    assert reader.read() == {"c.test": 104.0, "d.test": 105.0}
    assert reader.read() == {}
    again = AccessLog(path)  # a controller that starts reads what the edge kept
    assert again.read() == {"a.test": 103.0, "b.test": 101.0, "c.test": 104.0, "d.test": 105.0}


# -- the controller ------------------------------------------------------------------------------------------


def request_to(path, host, at=None):
    with path.open("a") as f:
        f.write(line(host, (at or timezone.now()).timestamp()))


def idle_for(name, seconds):
    Instance.objects.filter(name=name).update(last_active_at=timezone.now() - timedelta(seconds=seconds))


def settle(controller, converge):
    """The watcher reads the log (its thread does that in `hafen up`), then the passes run."""
    controller.elastic.watcher.poll()
    converge(controller)
    controller.elastic.watcher.poll()
    converge(controller)


@pytest.fixture
def sleepy(running_instance, access_log):
    instance = running_instance("eve")
    elastic.set_policy(LOCAL, "eve", idle="20s", deep_sleep="1h")
    return instance


def test_an_idle_instance_falls_asleep_and_the_first_request_wakes_it(sleepy, controller, converge, engine, edge,
                                                                       access_log, settings):
    marker = settings.edge_dir / "asleep" / "eve.localhost"
    idle_for("eve", 30)
    settle(controller, converge)
    eve = Instance.objects.get(name="eve")
    assert (eve.state, eve.sleep) == (State.SLEEPING, Sleep.LIGHT)
    assert marker.exists()  # the proxy sends its requests to the waking page at once
    assert engine.services["unit-eve_web"].replicas == 0
    assert engine.services["unit-eve_db"].replicas == 1  # light sleep: the database runs on
    assert controller.edge_state.mode("eve.localhost") == "waking"
    assert edge.probe("eve.localhost", "/") == 503
    decision = Decision.objects.get(instance=eve)
    assert decision.action == "sleep" and decision.numbers["idle_s"] >= 30 and decision.numbers["in_flight"] == 0
    assert [o.kind for o in Operation.objects.filter(instance=eve).order_by("id")][-1] == "sleep"

    woken = []
    controller.elastic.watcher.on_request = lambda: woken.append(True)
    controller.elastic.watcher.watch(["eve.localhost"])
    request_to(access_log, "eve.localhost")
    controller.elastic.watcher.poll()
    assert woken  # the loop is woken at once, not at its next idle pass
    controller.pass_once()
    assert not marker.exists()  # from the decision on, the proxy waits for the web service again
    converge(controller)
    eve.refresh_from_db()
    assert (eve.state, eve.sleep) == (State.RUNNING, Sleep.AWAKE)
    assert engine.services["unit-eve_web"].replicas == 1
    assert edge.probe("eve.localhost", "/") == 200
    assert [d.action for d in Decision.objects.filter(instance=eve)] == ["wake", "sleep"]
    # awake again, it does not fall asleep at once: its idle clock starts at that request
    settle(controller, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.AWAKE


def test_the_controller_rests_when_nothing_stirs_and_passes_at_once_when_something_does(
        sleepy, controller, converge, edge, access_log, monkeypatch):
    settle(controller, converge)

    def rest():
        controller.stirred_at = time.monotonic() - loop.REST_AFTER - 1
        controller.wake.clear()

    rest()
    assert controller.resting and controller.interval(False) == loop.REST_INTERVAL
    assert controller.interval(True) == loop.BUSY_INTERVAL
    controller.pass_seconds = 0.5  # a big fleet's pass: as long a wait after it while busy
    assert controller.interval(True) == 0.5 and controller.interval(False) == loop.REST_INTERVAL
    controller.pass_seconds = 0.0
    assert not controller.pass_once() and controller.resting  # a pass that sees nothing new keeps the rest
    assert Client().get("/healthz").json()["controller"]["resting"] is True

    edge.open_requests = {f"{fake_address('unit-eve_web', 0)}:8000": 1}  # someone has a page open
    controller.pass_once()
    assert not controller.resting and controller.interval(False) == loop.IDLE_INTERVAL
    assert Client().get("/healthz").json()["controller"]["resting"] is False
    edge.open_requests = {}

    rest()
    request_to(access_log, "eve.localhost")  # a request to an awake instance: autoscaling needs the passes
    controller.elastic.watcher.poll()
    assert controller.wake.is_set() and not controller.resting

    rest()
    controller.stir()  # what the engine's event stream calls when a container dies or changes its health
    assert controller.wake.is_set() and not controller.resting
    controller.wake.clear()
    controller.stir()  # not resting: no extra pass
    assert not controller.wake.is_set()

    rest()  # a rest longer than the heartbeat's interval beats meanwhile
    beat = ControlPlane.objects.get(pk=1).beat_at
    time.sleep(0.01)
    controller.rest_until(time.monotonic() + 0.05)
    assert ControlPlane.objects.get(pk=1).beat_at == beat  # (shorter than BEAT_INTERVAL: no beat)
    monkeypatch.setattr(loop, "BEAT_INTERVAL", 0.02)
    controller.rest_until(time.monotonic() + 0.1)
    assert ControlPlane.objects.get(pk=1).beat_at > beat and ControlPlane.objects.get(pk=1).resting

    rest()
    services.stop(LOCAL, "eve")  # new work is a busy pass, and the change stirs until it is done
    assert controller.pass_once() and not controller.resting


def test_a_sleeper_that_holds_requests_has_its_domain_in_the_folder_of_its_step_until_it_runs(
        sleepy, controller, converge, engine, access_log, settings):
    domain, hold = "eve.localhost", settings.edge_dir / "hold"
    elastic.set_policy(LOCAL, "eve", hold="10s")
    idle_for("eve", 30)
    settle(controller, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.LIGHT
    assert sorted(str(f.relative_to(hold)) for f in hold.rglob("*.*")) == [f"10/{domain}"]
    elastic.set_policy(LOCAL, "eve", hold="off")
    controller.pass_once()
    assert not list(hold.rglob("*.*"))
    elastic.set_policy(LOCAL, "eve", hold="20s")
    controller.pass_once()
    assert sorted(str(f.relative_to(hold)) for f in hold.rglob("*.*")) == [f"20/{domain}"]

    request_to(access_log, domain)
    controller.elastic.watcher.poll()
    controller.pass_once()  # the wake decided and started: the waking page's file goes, the held requests' stays
    assert Instance.objects.get(name="eve").state == State.WAKING
    assert not (settings.edge_dir / "asleep" / domain).exists()
    assert (hold / "20" / domain).exists()
    converge(controller)
    assert Instance.objects.get(name="eve").state == State.RUNNING
    assert not list(hold.rglob("*.*"))


def test_a_wake_decided_while_a_user_stops_the_instance_waits_for_the_next_pass(
        sleepy, controller, converge, engine, access_log):
    idle_for("eve", 30)
    settle(controller, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.LIGHT
    request_to(access_log, "eve.localhost")
    controller.elastic.watcher.poll()
    decide = controller.elastic.tick

    def decide_then_stop(*args, **kwargs):
        decide(*args, **kwargs)
        services.stop(LOCAL, "eve")  # an operator's stop, queued between the decision and its start

    controller.elastic.tick = decide_then_stop
    controller.pass_once()
    controller.elastic.tick = decide
    wake = Operation.objects.get(instance__name="eve", kind="wake")
    assert wake.state == OpState.PENDING  # not started beside the stop: the next pass sees the whole queue
    converge(controller)
    wake.refresh_from_db()
    eve = Instance.objects.get(name="eve")
    assert (eve.state, engine.services["unit-eve_web"].replicas) == (State.STOPPED, 0)
    assert wake.state != OpState.RUNNING


def test_an_open_request_keeps_it_awake(sleepy, controller, converge, edge):
    idle_for("eve", 300)
    edge.open_requests = {f"{fake_address('unit-eve_web', 0)}:8000": 1}
    settle(controller, converge)
    eve = Instance.objects.get(name="eve")
    assert eve.sleep == Sleep.AWAKE and eve.state == State.RUNNING
    assert timezone.now() - eve.last_active_at < timedelta(seconds=10)  # an open websocket is activity


def test_nothing_sleeps_while_the_proxy_does_not_answer_or_before_the_log_was_read(sleepy, controller, converge,
                                                                                   edge):
    idle_for("eve", 300)
    converge(controller)  # the watcher never read the log
    assert controller.elastic.held.startswith("the edge's access log")
    edge.open_requests = None
    settle(controller, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.AWAKE
    assert "does not say" in controller.elastic.held


def edge_node(engine, node="n2", state="ready"):
    engine.node_states[node] = NodeState(node, node.replace("n", "node"), "worker", state, "active",
                                         labels={"edge": "true"})


def agent_says(controller, node="n2", seen=None, open_=None):
    for text in report.Report(node, seen or {}, {} if open_ is None else open_).lines():
        controller.elastic.remote.feed(f"some task prefix {text}")


def test_a_proxy_on_another_node_holds_every_sleep_until_its_agent_reports(sleepy, controller, converge, engine):
    edge_node(engine)
    idle_for("eve", 300)
    settle(controller, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.AWAKE
    assert controller.elastic.held == "the edge proxy on node2 has not reported its requests lately"
    agent_says(controller)  # its heartbeat: nothing seen there
    settle(controller, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.LIGHT and not controller.elastic.held
    controller.elastic.remote.feed(report.TAG + '{"node": "n2", "seen": {}, "open": null}')  # its proxy: no answer
    settle(controller, converge)
    assert "node2" in controller.elastic.held


def test_requests_and_open_websockets_at_a_proxy_on_another_node_count(sleepy, controller, converge, engine):
    edge_node(engine)
    edge_node(engine, "n3", state="down")  # a node that is down takes no requests: it holds nothing
    idle_for("eve", 300)
    agent_says(controller, open_={f"{fake_address('unit-eve_web', 0)}:8000": 1})  # a websocket held there
    settle(controller, converge)
    eve = Instance.objects.get(name="eve")
    assert eve.sleep == Sleep.AWAKE and timezone.now() - eve.last_active_at < timedelta(seconds=10)
    agent_says(controller)  # the websocket closed
    idle_for("eve", 300)
    settle(controller, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.LIGHT
    woken = []
    controller.elastic.remote.on_request = lambda: woken.append(True)
    agent_says(controller, seen={"eve.localhost": timezone.now().timestamp()})  # the first request, there
    assert woken  # the controller passes at once
    settle(controller, converge)
    eve = Instance.objects.get(name="eve")
    assert eve.sleep == Sleep.AWAKE and timezone.now() - eve.last_active_at < timedelta(seconds=10)


def test_a_controller_that_starts_again_keeps_the_idle_clock_of_the_edge(sleepy, controller, converge, engine,
                                                                          edge, settings, access_log):
    request_to(access_log, "eve.localhost", timezone.now() - timedelta(seconds=5))
    settle(controller, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.AWAKE
    again = Controller(engine, edge, settings)  # a new controller: it reads the log from its start
    settle(again, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.AWAKE
    request_to(access_log, "eve.localhost", timezone.now() - timedelta(seconds=40))  # an older line changes nothing
    Instance.objects.filter(name="eve").update(last_active_at=timezone.now() - timedelta(seconds=30))
    access_log.write_text(line("eve.localhost", (timezone.now() - timedelta(seconds=30)).timestamp()))
    third = Controller(engine, edge, settings)
    settle(third, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.LIGHT  # idle for 30 s by the edge's record


def test_a_stopped_instance_does_not_wake_and_starts_awake(sleepy, controller, converge, engine, access_log):
    idle_for("eve", 30)
    settle(controller, converge)
    assert Instance.objects.get(name="eve").state == State.SLEEPING
    services.stop(LOCAL, "eve")
    converge(controller)
    request_to(access_log, "eve.localhost")
    settle(controller, converge)
    eve = Instance.objects.get(name="eve")
    assert (eve.state, eve.sleep) == (State.STOPPED, Sleep.AWAKE)
    assert controller.edge_state.mode("eve.localhost") == "stopped"
    services.start(LOCAL, "eve")
    converge(controller)
    eve.refresh_from_db()
    assert eve.state == State.RUNNING and engine.services["unit-eve_web"].replicas == 1


def test_deep_sleep_waits_for_a_backup_of_the_last_writes(sleepy, controller, converge, engine, snapshot):
    elastic.set_policy(LOCAL, "eve", deep_sleep="1m")
    idle_for("eve", 120)
    settle(controller, converge)
    eve = Instance.objects.get(name="eve")
    assert eve.sleep == Sleep.LIGHT  # no backup after its last request yet
    snapshot("eve", "abc123")
    settle(controller, converge)
    eve.refresh_from_db()
    assert (eve.state, eve.sleep) == (State.SLEEPING, Sleep.DEEP)
    assert {svc: engine.services[f"unit-eve_{svc}"].replicas for svc in ("web", "db", "redis")} == \
        {"web": 0, "db": 0, "redis": 0}
    services.restart(LOCAL, "eve")  # an operator's command wakes it, database first
    converge(controller)
    eve.refresh_from_db()
    assert (eve.state, eve.sleep) == (State.RUNNING, Sleep.AWAKE)
    assert {svc: engine.services[f"unit-eve_{svc}"].replicas for svc in ("web", "db", "redis")} == \
        {"web": 1, "db": 1, "redis": 1}


def test_an_update_of_a_sleeper_wakes_it_first_and_a_backup_of_a_light_sleeper_does_not(
        sleepy, controller, converge, monkeypatch):
    idle_for("eve", 30)
    settle(controller, converge)
    backups.backup(LOCAL, "eve")
    assert [o.kind for o in Operation.objects.filter(instance__name="eve", state=OpState.PENDING)] == ["backup"]
    Operation.objects.filter(kind="backup").delete()
    monkeypatch.setattr(updates, "offers", lambda instances: {i.pk: None for i in instances}, raising=True)
    eve = Instance.objects.get(name="eve")
    elastic.wake_for(eve, "update")
    assert [o.kind for o in Operation.objects.filter(instance=eve, state=OpState.PENDING)] == ["wake"]
    assert Decision.objects.filter(instance=eve).first().reason == "update needs it awake"
    converge(controller)
    assert Instance.objects.get(name="eve").state == State.RUNNING


def test_a_request_while_it_falls_asleep_wakes_it_again(sleepy, controller, converge, engine, access_log):
    idle_for("eve", 30)
    controller.elastic.watcher.poll()
    controller.pass_once()  # decides; the sleep operation begins
    eve = Instance.objects.get(name="eve")
    assert eve.sleep == Sleep.LIGHT
    time.sleep(0.01)
    request_to(access_log, "eve.localhost")
    settle(controller, converge)
    eve.refresh_from_db()
    assert (eve.state, eve.sleep) == (State.RUNNING, Sleep.AWAKE)
    kinds = dict(Operation.objects.filter(instance=eve, kind__in=("sleep", "wake")).values_list("kind", "state"))
    assert kinds["wake"] == OpState.SUCCEEDED


# -- the policy in the service layer, the CLI and the API -----------------------------------------------


def test_setting_the_policy_is_audited_checked_and_limited_to_admins(running_instance, people):
    running_instance("ant", organisation="acme")
    with pytest.raises(Forbidden):
        elastic.set_policy(people.actor("member"), "ant", idle="1h")
    with pytest.raises(InvalidInput, match="idle: not a duration"):
        elastic.set_policy(people.actor("admin"), "ant", idle="soon")
    with pytest.raises(InvalidInput, match="nothing to change"):
        elastic.set_policy(people.actor("admin"), "ant")
    assert Instance.objects.get(name="ant").policy == {}
    shown = elastic.set_policy(people.actor("admin"), "ant", idle="2h", deep_sleep="never")
    assert shown["policy"]["idle"] == {"value": "2h", "seconds": 7200, "number": None, "source": "instance"}
    assert shown["policy"]["deep_sleep"]["value"] == "never"
    entries = list(AuditEntry.objects.filter(action="policy").values_list("result", flat=True))
    assert sorted(entries) == ["ok", "refused", "refused", "refused"]


def hafen(capsys, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["hafen", *args])
    monkeypatch.setenv("COLUMNS", "120")
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


def test_the_policy_command_shows_sets_and_refuses_bad_input(capsys, monkeypatch, running_instance, controller):
    running_instance("eve")
    code, out, _ = hafen(capsys, monkeypatch, "policy", "eve")
    assert code == 0 and "sleeps after  30m (installation), deep sleep after 1d (installation)" in out
    code, out, _ = hafen(capsys, monkeypatch, "policy", "eve", "--idle", "20m", "--deep-sleep", "never")
    assert code == 0 and "20m (instance)" in out and "never (instance)" in out
    code, out, err = hafen(capsys, monkeypatch, "policy", "eve", "--idle", "3s")
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1 and "out of range" in err
    code, out, err = hafen(capsys, monkeypatch, "policy", "eve", "--hold", "7s")
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1 and "one of 5s, 10s" in err
    assert "wakes with    the waking page for every request (installation)" in hafen(capsys, monkeypatch, "policy",
                                                                                      "eve")[1]
    code, out, _ = hafen(capsys, monkeypatch, "policy", "eve", "--hold", "30s")
    assert code == 0 and "wakes with    requests held up to 30s (instance)" in out
    code, out, _ = hafen(capsys, monkeypatch, "policy", "eve", "--json")
    assert json.loads(out)["policy"]["idle"]["seconds"] == 1200
    assert json.loads(out)["policy"]["hold"] == {"value": "30s", "seconds": 30, "number": None, "source": "instance"}
    code, out, _ = hafen(capsys, monkeypatch, "show", "eve")
    assert "sleeps after  20m (instance)" in out and "last request" in out


def api(people, role, method, path, body=None):
    kwargs = {"content_type": "application/json", **people.headers(role)}
    if body is not None:
        kwargs["data"] = json.dumps(body)
    return getattr(Client(), method)("/api/v1" + path, **kwargs)


def test_the_api_reads_and_sets_the_policy(running_instance, people):
    running_instance("ant", organisation="acme")
    shown = api(people, "member", "get", "/instances/ant/policy")
    assert shown.status_code == 200 and shown.json()["policy"]["idle"]["source"] == "installation"
    assert api(people, "member", "patch", "/instances/ant/policy", {"idle": "1h"}).status_code == 403
    assert api(people, "outsider", "get", "/instances/ant/policy").status_code == 404
    bad = api(people, "admin", "patch", "/instances/ant/policy", {"idle": "whenever"})
    assert bad.status_code == 400 and "not a duration" in bad.json()["error"]["message"]
    done = api(people, "admin", "patch", "/instances/ant/policy", {"idle": "45m", "deep_sleep": "default"})
    assert done.status_code == 200 and done.json()["policy"]["idle"]["seconds"] == 2700
    detail = api(people, "admin", "get", "/instances/ant").json()
    assert detail["elastic"]["policy"]["idle"]["value"] == "45m" and detail["elastic"]["sleep"] is None


def test_the_instance_page_shows_the_sleep_card_and_admins_set_the_policy(running_instance, people):
    from tests.unit.test_web_backups import client_for, messages_of, page

    running_instance("ant", organisation="acme")
    text = page(client_for(people, "member").get("/instances/ant"))
    assert 'id="sleep"' in text and "30m without a request" in text and 'name="idle"' not in text
    admin = client_for(people, "admin")
    assert 'name="idle"' in page(admin.get("/instances/ant"))
    response = admin.post("/instances/ant/policy", {"idle": "soon", "deep_sleep": ""}, follow=True)
    assert any("idle: not a duration" in m for m in messages_of(response)), messages_of(response)
    assert Instance.objects.get(name="ant").policy == {}
    response = admin.post("/instances/ant/policy", {"idle": "45m", "deep_sleep": ""}, follow=True)
    assert "Sleep policy saved." in messages_of(response)
    assert Instance.objects.get(name="ant").policy == {"idle": 2700}
    assert "45m without a request" in page(response)
    assert Client().post("/instances/ant/policy", {"idle": "1m"}).status_code in (302, 403)  # not logged in
    assert Instance.objects.get(name="ant").policy == {"idle": 2700}


def test_an_organisations_defaults_are_set_by_its_admins_and_reach_its_instances(
        running_instance, people, capsys, monkeypatch, settings):
    running_instance("ant", organisation="acme")
    with pytest.raises(Forbidden):
        elastic.set_organisation_policy(people.actor("member"), "acme", idle="1h")
    with pytest.raises(NotFound):
        elastic.set_organisation_policy(people.actor("outsider"), "acme", idle="1h")
    with pytest.raises(InvalidInput, match="below min"):
        elastic.set_organisation_policy(people.actor("admin"), "acme", min="3", max="2")
    shown = elastic.set_organisation_policy(people.actor("admin"), "acme", idle="2h", max="3")
    assert shown == {"organisation": "acme", "policy": {"idle": "2h", "max": "3"}}
    ant = Instance.objects.get(name="ant")
    mine = p.effective(ant, settings)
    assert (mine.idle, mine.max, mine.sources["idle"], mine.sources["max"]) == (7200, 3, "organisation",
                                                                               "organisation")
    code, out, _ = hafen(capsys, monkeypatch, "org", "policy", "acme", "--idle", "default")
    assert code == 0 and "idle" not in out and "max              3" in out
    code, out, err = hafen(capsys, monkeypatch, "org", "policy", "acme", "--target-cpu", "500")
    assert code == 2 and "target-cpu" in err
    reply = api(people, "admin", "patch", "/organisations/acme/policy", {"deep_sleep": "never"})
    assert reply.status_code == 200 and reply.json()["policy"] == {"max": "3", "deep_sleep": "never"}
    assert api(people, "member", "get", "/organisations/acme/policy").status_code == 200
    assert api(people, "member", "patch", "/organisations/acme/policy", {"idle": "1h"}).status_code == 403


@pytest.mark.parametrize("together", [True, False])
def test_a_deep_sleeper_wakes_all_at_once_only_where_the_web_checks_its_dependencies(
        sleepy, controller, converge, snapshot, access_log, monkeypatch, together):
    from hafen.catalog import get_app

    monkeypatch.setattr(get_app("demo"), "health_covers_dependencies", together)
    elastic.set_policy(LOCAL, "eve", deep_sleep="1m")
    idle_for("eve", 120)
    snapshot("eve", "abc123")
    settle(controller, converge)
    assert Instance.objects.get(name="eve").sleep == Sleep.DEEP
    request_to(access_log, "eve.localhost")
    settle(controller, converge)
    wake = Operation.objects.filter(instance__name="eve", kind="wake").latest("id")
    assert wake.state == OpState.SUCCEEDED
    deploys = [step["name"] for step in wake.steps if step["name"].startswith("deploy:")]
    assert deploys == (["deploy:db, redis, web"] if together else ["deploy:db, redis", "deploy:web"])
