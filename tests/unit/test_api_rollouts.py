"""Fleet rollouts and update windows through the REST API: who may do what, bad input as 4xx JSON, the audit.

ant and bee (acme) and cat (globex) run demo 1.0. The people are those of conftest: an operator, an admin and
a member of acme, an outsider (the admin of globex), and a read token of acme's admin.
"""

import json

import pytest
from django.test import Client

from hafen.access.models import AuditEntry, Organisation
from hafen.instances.models import Operation, Rollout, RolloutState


@pytest.fixture
def world(acme_fleet):
    return acme_fleet


def call(people, role, method, path, body=None):
    kwargs = {"content_type": "application/json", **people.headers(role)}
    if body is not None:
        kwargs["data"] = json.dumps(body)
    return getattr(Client(), method)("/api/v1" + path, **kwargs)


def assert_error(response, status, text=""):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(response.json()) == {"error"} and text in error["message"], error
    return error


ACME = {"app": "demo", "version": "2.0", "organisation": "acme"}


def test_a_rollout_is_created_listed_shown_paused_resumed_and_cancelled(world, controller, converge):
    created = call(world, "admin", "post", "/rollouts", {**ACME, "canaries": ["bee"], "batch": 2})
    assert created.status_code == 202, created.content
    data = created.json()
    assert (data["app"], data["version"], data["organisation"], data["state"]) == ("demo", "2.0", "acme", "scheduled")
    assert [(i["instance"], i["wave"], i["canary"], i["state"]) for i in data["items"]] == [
        ("bee", 0, True, "pending"), ("ant", 1, False, "pending")]
    rollout_id = data["id"]
    listed = call(world, "member", "get", "/rollouts").json()
    assert [(r["id"], r["counts"]) for r in listed] == [(rollout_id, {"pending": 2})] and "items" not in listed[0]
    assert call(world, "outsider", "get", "/rollouts").json() == []
    assert call(world, "member", "get", f"/rollouts/{rollout_id}").json()["items"] == data["items"]

    paused = call(world, "admin", "post", f"/rollouts/{rollout_id}/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert_error(call(world, "admin", "post", f"/rollouts/{rollout_id}/pause"), 409, "is paused")
    assert call(world, "operator", "post", f"/rollouts/{rollout_id}/resume").json()["state"] == "running"
    controller.pass_once()
    assert list(Operation.objects.filter(kind="update").values_list("instance_name", flat=True)) == ["bee"]
    cancelled = call(world, "admin", "post", f"/rollouts/{rollout_id}/cancel").json()
    assert (cancelled["state"], cancelled["error"]) == ("cancelled", "cancelled by alice")
    converge(controller)  # the canary's update under way finishes
    assert Operation.objects.get(kind="update").state == "succeeded"
    shown = call(world, "admin", "get", f"/rollouts/{rollout_id}").json()
    assert {i["instance"]: i["state"] for i in shown["items"]}["ant"] == "not touched"
    actions = list(AuditEntry.objects.filter(action__startswith="rollout").order_by("id").values_list(
        "action", "actor", "via", "result"))
    assert actions == [("rollout", "alice", "api", "ok"), ("rollout-pause", "alice", "api", "ok"),
                       ("rollout-pause", "alice", "api", "refused"), ("rollout-resume", "olga", "api", "ok"),
                       ("rollout-cancel", "alice", "api", "ok")]


def test_an_operator_rolls_out_over_every_organisation_at_a_time_with_its_zone(world):
    response = call(world, "operator", "post", "/rollouts", {"app": "demo", "version": "2.0", "canary": 0,
                                                             "start_at": "2030-12-01T03:00:00+01:00"})
    assert response.status_code == 202, response.content
    data = response.json()
    assert data["organisation"] is None and data["start_at"] == "2030-12-01T02:00:00+00:00"
    assert [i["instance"] for i in data["items"]] == ["ant", "bee", "cat"]


# (body, status, part of the message): nothing is created
BAD = [
    ({"app": "demo", "version": "9.9", "organisation": "acme"}, 400, "no version '9.9'"),
    ({"app": "nope", "version": "2.0", "organisation": "acme"}, 400, "nope"),
    ({**ACME, "version": "1.0"}, 409, "needs 1.0"),
    ({**ACME, "batch": 0}, 400, "batch"),
    ({**ACME, "canary": -1}, 400, "canary"),
    ({**ACME, "canaries": ["cat"]}, 400, "named cat"),
    ({**ACME, "start_at": "2030-12-01T02:00"}, 400, "time zone"),
    ({**ACME, "start_at": "tomorrow"}, 400, "start_at"),
    ({**ACME, "start_at": "0001-01-01T00:00:00+01:00"}, 400, "start_at"),
    ({"app": "demo", "organisation": "acme"}, 400, "version"),
    ({"app": "demo", "version": "2.0"}, 400, "name the organisation"),
    ({"app": "demo", "version": "2.0", "organisation": "nosuch"}, 404, "no organisation 'nosuch'"),
]


@pytest.mark.parametrize("body,status,text", BAD, ids=[f"{status} {text}" for _, status, text in BAD])
def test_bad_input_is_a_4xx_json_error_and_creates_nothing(world, body, status, text):
    assert_error(call(world, "admin", "post", "/rollouts", body), status, text)
    assert not Rollout.objects.exists()


@pytest.mark.parametrize("role,status", [("member", 403), ("read", 403), ("outsider", 404)])
def test_who_may_not_start_or_control_a_rollout(world, role, status):
    assert_error(call(world, role, "post", "/rollouts", ACME), status)
    assert not Rollout.objects.exists()
    rollout_id = call(world, "admin", "post", "/rollouts", ACME).json()["id"]
    for action in ("pause", "resume", "cancel"):
        assert_error(call(world, role, "post", f"/rollouts/{rollout_id}/{action}"), status)
    assert Rollout.objects.get().state == RolloutState.SCHEDULED
    if role == "outsider":
        assert_error(call(world, role, "get", f"/rollouts/{rollout_id}"), 404, f"no rollout {rollout_id}")


def test_an_unknown_rollout_and_a_bad_limit(world):
    assert_error(call(world, "operator", "get", "/rollouts/999999"), 404, "no rollout 999999")
    assert_error(call(world, "operator", "post", "/rollouts/999999/cancel"), 404, "no rollout 999999")
    assert_error(call(world, "operator", "get", "/rollouts?limit=0"), 400, "limit")


# -- update windows ------------------------------------------------------------------------------------


def test_an_admin_sets_and_clears_the_update_window_and_the_organisation_shows_it(world):
    response = call(world, "admin", "post", "/organisations/acme/update-window", {"cron": "0 2 * * 6", "minutes": 240})
    assert response.status_code == 200, response.content
    window = response.json()["update_window"]
    assert (window["cron"], window["minutes"]) == ("0 2 * * 6", 240) and isinstance(window["open"], bool)
    assert window["next"].endswith("+00:00")
    assert call(world, "member", "get", "/organisations/acme").json()["update_window"] == window
    listed = {o["slug"]: o["update_window"] for o in call(world, "operator", "get", "/organisations").json()}
    assert listed == {"acme": window, "globex": None}
    cleared = call(world, "admin", "post", "/organisations/acme/update-window", {"cron": ""})
    assert cleared.status_code == 200 and cleared.json()["update_window"] is None
    assert list(AuditEntry.objects.filter(action="update-window").values_list("actor", "result")) == [
        ("alice", "ok"), ("alice", "ok")]


@pytest.mark.parametrize("role,body,status,text", [
    ("admin", {"cron": "at night", "minutes": 60}, 400, "not a cron schedule"),
    ("admin", {"cron": "0 2 * * 6"}, 400, "1 minute to 7 days"),
    ("admin", {"cron": "0 2 * * 6", "minutes": 100000}, 400, "minutes"),
    ("admin", {"minutes": 60}, 400, "cron"),
    ("member", {"cron": "0 2 * * 6", "minutes": 60}, 403, ""),
    ("read", {"cron": "0 2 * * 6", "minutes": 60}, 403, ""),
    ("outsider", {"cron": "0 2 * * 6", "minutes": 60}, 404, "no organisation 'acme'"),
])
def test_bad_or_forbidden_update_windows_change_nothing(world, role, body, status, text):
    assert_error(call(world, role, "post", "/organisations/acme/update-window", body), status, text)
    assert Organisation.objects.get(slug="acme").update_window == ""
