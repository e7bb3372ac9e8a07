"""Fleet rollouts through the CLI: `hafen update --app`, `hafen rollout ...` and `hafen org window`, on the local
backend in process (as the `hafen` command runs them) and on the remote backend against the real API."""

import json
from datetime import UTC, datetime

import httpx
import pytest
from django.core.wsgi import get_wsgi_application

from hafen import cli_rollouts
from hafen.access.models import AuditEntry, Organisation
from hafen.backends.local import LocalBackend
from hafen.backends.remote import RemoteBackend
from hafen.errors import Conflict, Forbidden, InvalidInput, NotFound
from hafen.instances.models import Instance, Rollout, RolloutState
from tests.unit.test_cli import controller_running, hafen

V2 = "hafen/demo:2.0"


@pytest.fixture
def fleet(acme_fleet, engine, monkeypatch):
    """Demo 1.0 instances: ant and bee of acme, cat of globex (the people of conftest)."""
    monkeypatch.setattr(cli_rollouts, "POLL", 0.05)
    return engine


def rows(out):
    """The table's rows by instance: its other columns, split on white space."""
    lines = out.splitlines()
    start = next(n for n, line in enumerate(lines) if line.split()[:3] == ["INSTANCE", "WAVE", "STATE"])
    return {line.split()[0]: line.split()[1:] for line in lines[start + 1:] if line.strip() and
            not line.startswith("rollout ")}


def only_rollout():
    return Rollout.objects.get()


# -- hafen update --app ---------------------------------------------------------------------------------


def test_update_app_follows_the_rollout_and_prints_each_instance(capsys, monkeypatch, controller, fleet):
    with controller_running(controller):
        code, out, err = hafen(capsys, monkeypatch, "update", "--app", "demo", "--version", "2.0",
                               "--canary-instance", "bee", "--batch", "2")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["INSTANCE", "WAVE", "STATE", "FROM", "NOW", "MESSAGE"]
    assert rows(out) == {"bee": ["canary", "updated", "1.0", "2.0"], "ant": ["1", "updated", "1.0", "2.0"],
                         "cat": ["1", "updated", "1.0", "2.0"]}
    rollout = only_rollout()
    assert out.splitlines()[-1] == f"rollout {rollout.pk} of demo to 2.0: succeeded (3 updated)"
    assert {i.version for i in Instance.objects.all()} == {"2.0"}
    entry = AuditEntry.objects.get(action="rollout")
    assert (entry.via, entry.result, entry.detail["rollout"]) == ("cli", "ok", rollout.pk)


def test_a_failed_rollout_prints_its_table_and_exits_6_with_one_error_line(capsys, monkeypatch, controller, fleet):
    fleet.broken_images[fleet.image_id(V2)] = "job"
    with controller_running(controller):
        code, out, err = hafen(capsys, monkeypatch, "update", "--app", "demo", "--version", "2.0")
    assert code == 6, err
    found = rows(out)
    assert found["ant"][:4] == ["canary", "rolled", "back", "1.0"]
    assert found["bee"][:4] == ["1", "not", "touched", "1.0"]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    rollout = only_rollout()
    assert len(errors) == 1 and errors[0].startswith(f"error: rollout {rollout.pk} of demo to 2.0 failed: ant: ")
    assert {i.version for i in Instance.objects.all()} == {"1.0"}


def test_update_app_json_prints_the_rollout_even_when_it_failed(capsys, monkeypatch, controller, fleet):
    fleet.broken_images[fleet.image_id(V2)] = "job"
    with controller_running(controller):
        code, out, err = hafen(capsys, monkeypatch, "update", "--app", "demo", "--version", "2.0", "--org", "acme",
                               "--json")
    assert code == 6, err
    data = json.loads(out)
    assert (data["state"], data["organisation"], data["counts"]) == ("failed", "acme",
                                                                     {"rolled back": 1, "not touched": 1})


def test_detach_prints_the_rollout_id_and_at_is_read_as_utc(capsys, monkeypatch, controller, fleet):
    code, out, err = hafen(capsys, monkeypatch, "update", "--app", "demo", "--version", "2.0", "--detach",
                           "--at", "2030-12-01T02:00")
    assert code == 0, err
    rollout = only_rollout()
    assert out.startswith(f"rollout {rollout.pk} queued: demo to 2.0 on 3 instance(s), from 2030-12-01 02:00 UTC")
    assert rollout.start_at == datetime(2030, 12, 1, 2, 0, tzinfo=UTC)
    assert rollout.state == RolloutState.SCHEDULED
    Rollout.objects.all().delete()
    code, out, err = hafen(capsys, monkeypatch, "update", "--app", "demo", "--version", "2.0", "--detach", "--json",
                           "--at", "2030-12-01T03:00+01:00", "--canary", "0", "--batch", "3", "--org", "acme")
    assert code == 0, err
    data = json.loads(out)
    assert (data["start_at"], data["canary"], data["batch"]) == ("2030-12-01T02:00:00+00:00", 0, 3)
    assert [item["instance"] for item in data["items"]] == ["ant", "bee"]


def test_following_a_rollout_past_an_explicit_timeout_says_it_goes_on(capsys, monkeypatch, controller, fleet):
    with controller_running(controller):
        code, out, err = hafen(capsys, monkeypatch, "update", "--app", "demo", "--version", "2.0",
                               "--at", "2030-12-01T02:00", "--timeout", "0.3")
    assert code == 10, err
    rollout = only_rollout()
    assert err.splitlines()[-1].startswith(f"error: rollout {rollout.pk} of demo to 2.0 is still scheduled after ")
    assert f"`hafen rollout show {rollout.pk}`" in err
    assert Rollout.objects.get().state == RolloutState.SCHEDULED


BAD = {
    "neither": (["update"], 2, "error: give NAME (one instance) or --app APP (a rollout over its instances)"),
    "both": (["update", "ant", "--app", "demo"], 2, "error: give NAME (one instance) or --app APP (a rollout over "
                                                    "its instances), not both"),
    "restore": (["update", "--app", "demo", "--version", "2.0", "--restore", "latest"], 2,
                "error: --restore goes with NAME (one instance), not with --app"),
    "rollout-options": (["update", "ant", "--batch", "2", "--at", "2030-01-01"], 2,
                        "error: --batch, --at go with --app (a rollout), not with NAME"),
    "no-version": (["update", "--app", "demo"], 2,
                   "error: a rollout needs --version: the version to update the instances of demo to"),
    "bad-at": (["update", "--app", "demo", "--version", "2.0", "--at", "tomorrow"], 2,
               "error: --at takes an ISO time such as 2026-12-01T02:00 (UTC) or 2026-12-01T02:00+01:00, "
               "not 'tomorrow'"),
    "unknown-version": (["update", "--app", "demo", "--version", "9.9"], 2, "error: demo has no version '9.9'"),
    "negative-canary": (["update", "--app", "demo", "--version", "2.0", "--canary", "-1"], 2,
                        "error: --canary takes 0 or more instances, --batch 1 or more"),
    "unknown-canary": (["update", "--app", "demo", "--version", "2.0", "--canary-instance", "zzz"], 2,
                       "error: no demo instance you may update named zzz"),
    "unknown-org": (["update", "--app", "demo", "--version", "2.0", "--org", "nosuch"], 3,
                    "error: no organisation 'nosuch'"),
    "unknown-rollout": (["rollout", "show", "999999"], 3, "error: no rollout 999999"),
    "pause-unknown": (["rollout", "pause", "999999"], 3, "error: no rollout 999999"),
    "window-neither": (["org", "window", "acme"], 2,
                       "error: give --cron CRON --minutes N (a window), or --none (at any time)"),
    "window-both": (["org", "window", "acme", "--cron", "0 2 * * 6", "--none"], 2,
                    "error: give --cron CRON --minutes N, or --none, not both"),
    "window-bad-cron": (["org", "window", "acme", "--cron", "at night", "--minutes", "60"], 2,
                        "error: not a cron schedule: 'at night'"),
    "window-no-minutes": (["org", "window", "acme", "--cron", "0 2 * * 6"], 2,
                          "error: a window lasts 1 minute to 7 days (--minutes)"),
    "window-unknown-org": (["org", "window", "nosuch", "--none"], 3, "error: no organisation 'nosuch'"),
}


@pytest.mark.parametrize("key", list(BAD))
def test_bad_input_is_one_line_and_changes_nothing(capsys, monkeypatch, controller, fleet, key):
    args, expected_code, expected = BAD[key]
    code, out, err = hafen(capsys, monkeypatch, *args)
    assert (code, out) == (expected_code, ""), err
    assert len(err.splitlines()) == 1 and err.startswith(expected), err
    assert not Rollout.objects.exists()
    assert not Organisation.objects.exclude(update_window="").exists()


# -- hafen rollout ----------------------------------------------------------------------------------------


def test_rollout_list_show_pause_resume_and_cancel(capsys, monkeypatch, controller, fleet):
    code, out, err = hafen(capsys, monkeypatch, "rollout", "list")
    assert (code, out) == (0, "no rollouts\n"), err
    hafen(capsys, monkeypatch, "update", "--app", "demo", "--version", "2.0", "--detach", "--org", "acme")
    rollout = only_rollout()
    code, out, err = hafen(capsys, monkeypatch, "rollout", "list")
    assert code == 0, err
    assert out.splitlines()[1].split()[:6] == [str(rollout.pk), "demo", "2.0", "acme", "scheduled", "2"]
    code, out, err = hafen(capsys, monkeypatch, "rollout", "show", str(rollout.pk))
    assert code == 0, err
    assert out.splitlines()[0] == f"rollout       {rollout.pk}: demo to 2.0, scheduled"
    assert rows(out) == {"ant": ["canary", "pending", "1.0", "1.0"], "bee": ["1", "pending", "1.0", "1.0"]}
    code, out, err = hafen(capsys, monkeypatch, "rollout", "pause", str(rollout.pk))
    assert (code, out) == (0, f"rollout {rollout.pk}: paused (2 pending)\n"), err
    code, out, err = hafen(capsys, monkeypatch, "rollout", "pause", str(rollout.pk))
    assert (code, out) == (4, ""), err
    assert err == f"error: rollout {rollout.pk} is paused; it cannot be paused\n"
    code, out, err = hafen(capsys, monkeypatch, "rollout", "resume", str(rollout.pk), "--json")
    assert code == 0 and json.loads(out)["state"] == "running", err
    code, out, err = hafen(capsys, monkeypatch, "rollout", "cancel", str(rollout.pk))
    assert (code, out) == (0, f"rollout {rollout.pk}: cancelled (2 not touched)\n"), err
    code, out, err = hafen(capsys, monkeypatch, "rollout", "show", str(rollout.pk), "--json")
    data = json.loads(out)
    assert (data["state"], data["error"]) == ("cancelled", f"cancelled by {data['created_by']}")
    code, out, err = hafen(capsys, monkeypatch, "rollout", "list", "--json")
    assert [(r["id"], r["state"]) for r in json.loads(out)] == [(rollout.pk, "cancelled")]
    assert "items" not in json.loads(out)[0]
    assert [e.action for e in AuditEntry.objects.filter(action__startswith="rollout").order_by("id")] == [
        "rollout", "rollout-pause", "rollout-pause", "rollout-resume", "rollout-cancel"]


# -- hafen org window -----------------------------------------------------------------------------------------


def test_org_window_sets_and_clears_the_window_and_org_list_shows_it(capsys, monkeypatch, people):
    code, out, err = hafen(capsys, monkeypatch, "org", "window", "acme", "--cron", "0 2 * * 6", "--minutes", "240")
    assert code == 0, err
    assert out.startswith("acme: update window 0 2 * * 6 (UTC), 240 min; ")
    code, out, err = hafen(capsys, monkeypatch, "org", "list")
    assert code == 0, err
    assert out.splitlines()[0].split()[-2:] == ["UPDATE", "WINDOW"]
    listed = {line.split()[0]: line.strip() for line in out.splitlines()[1:]}
    assert listed["acme"].endswith("0 2 * * 6 (UTC), 240 min") and listed["globex"].endswith("any time")
    code, out, err = hafen(capsys, monkeypatch, "org", "list", "--json")
    window = {o["slug"]: o["update_window"] for o in json.loads(out)}
    assert window["globex"] is None
    assert (window["acme"]["cron"], window["acme"]["minutes"]) == ("0 2 * * 6", 240)
    code, out, err = hafen(capsys, monkeypatch, "org", "window", "acme", "--none")
    assert (code, out) == (0, "acme: rollouts update its instances at any time\n"), err
    assert Organisation.objects.get(slug="acme").update_window == ""
    assert AuditEntry.objects.filter(action="update-window", result="ok", via="cli").count() == 2


# -- the remote backend ----------------------------------------------------------------------------------


def remote(token):
    return RemoteBackend("http://testserver", token, transport=httpx.WSGITransport(app=get_wsgi_application()))


def test_remote_and_local_backends_agree_on_rollouts(controller, fleet, people):
    far, near = remote(people.tokens["operator"]), LocalBackend()
    created = far.rollout_create("demo", "2.0", "acme", 1, ["bee"], 1, datetime(2030, 1, 1, tzinfo=UTC))
    assert created == near.rollout(created["id"]) == far.rollout(created["id"])
    assert [i["instance"] for i in created["items"]] == ["bee", "ant"]
    assert far.rollouts() == near.rollouts()
    assert far.rollout_control(created["id"], "pause")["state"] == "paused"
    assert near.rollout_control(created["id"], "resume")["state"] == "scheduled"  # its time is still ahead
    window = far.org_window("acme", "0 2 * * 6", 120)["update_window"]
    assert window == near.org_window("acme", "0 2 * * 6", 120)["update_window"]
    assert (window["cron"], window["minutes"]) == ("0 2 * * 6", 120)
    assert far.org_window("acme", "", 0)["update_window"] is None


def test_remote_rollouts_refuse_as_the_api_does(controller, fleet, people):
    admin, member = remote(people.tokens["admin"]), remote(people.tokens["member"])
    with pytest.raises(Forbidden):
        member.rollout_create("demo", "2.0", "acme", 1, [], 1, None)
    with pytest.raises(InvalidInput, match="name the organisation"):
        admin.rollout_create("demo", "2.0", None, 1, [], 1, None)
    with pytest.raises(NotFound):
        remote(people.tokens["outsider"]).rollout_create("demo", "2.0", "acme", 1, [], 1, None)
    created = admin.rollout_create("demo", "2.0", "acme", 1, [], 1, None)
    assert member.rollout(created["id"])["organisation"] == "acme"  # members see it
    with pytest.raises(Forbidden):
        member.rollout_control(created["id"], "cancel")
    with pytest.raises(NotFound):
        remote(people.tokens["outsider"]).rollout(created["id"])
    with pytest.raises(InvalidInput):
        admin.rollout_control(created["id"], "explode")
    assert admin.rollout_control(created["id"], "cancel")["state"] == "cancelled"
    with pytest.raises(Conflict):
        admin.rollout_control(created["id"], "resume")
    with pytest.raises(Forbidden):
        member.org_window("acme", "0 2 * * 6", 60)
