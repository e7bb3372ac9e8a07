"""The Rollouts pages and the organisation's update window in the web UI, through Django's test client.

ant and bee (acme) and cat (globex) run demo 1.0; the people are those of conftest.
"""

import html

import pytest
from django.test import Client
from django.utils import timezone

from hafen.access.models import AuditEntry, Organisation
from hafen.instances.models import Operation, Rollout, RolloutState
from tests.unit.test_web_backups import client_for, messages_of, page

HTMX = {"HTTP_HX_REQUEST": "true"}
FORM = {"app": "demo", "version": "2.0", "organisation": "acme", "canary": "1", "canaries": "", "batch": "1",
        "start_at": ""}


@pytest.fixture
def world(acme_fleet):
    return acme_fleet


def errors_of(response):
    text = page(response)
    return [html.unescape(part.split("</p>")[0]) for part in text.split('<div class="error"><p>')[1:]]


def test_the_nav_links_the_rollouts_page_and_only_those_who_may_update_get_the_form(world):
    for role, form in (("operator", True), ("admin", True), ("member", False), ("outsider", True)):
        text = page(client_for(world, role).get("/rollouts"))
        assert 'href="/rollouts" aria-current="page">Rollouts</a>' in text
        assert ('action="/rollouts"' in text) == form, role
    options = page(client_for(world, "admin").get("/rollouts")).split('name="organisation"')[1].split("</select>")[0]
    assert 'value="acme"' in options and "globex" not in options and "all (" not in options
    options = page(client_for(world, "operator").get("/rollouts")).split('name="organisation"')[1].split(
        "</select>")[0]
    assert 'value="" selected>all (' in options or 'value="">all (' in options


def test_an_admin_starts_a_rollout_and_follows_pauses_resumes_and_cancels_it(world, controller):
    client = client_for(world, "admin")
    response = client.post("/rollouts", {**FORM, "canaries": "bee", "start_at": "2030-12-01T02:00"})
    rollout = Rollout.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/rollouts/{rollout.pk}"
    assert (rollout.organisation.slug, rollout.start_at.isoformat()) == ("acme", "2030-12-01T02:00:00+00:00")
    text = page(client.get(f"/rollouts/{rollout.pk}"))
    assert f'hx-get="/rollouts/{rollout.pk}/progress" hx-trigger="every 2s"' in text
    assert 'id="rollout-state">scheduled</span>' in text
    assert '<a href="/instances/bee">bee</a>' in text and "<td>canary</td>" in text
    assert f'action="/rollouts/{rollout.pk}/pause"' in text and f'action="/rollouts/{rollout.pk}/cancel"' in text
    assert f'action="/rollouts/{rollout.pk}/resume"' not in text
    listed = page(client.get("/rollouts"))
    assert f'<a href="/rollouts/{rollout.pk}">#{rollout.pk}</a>' in listed and "2 pending" in listed

    response = client.post(f"/rollouts/{rollout.pk}/pause", follow=True)
    assert f"Rollout {rollout.pk} is paused." in messages_of(response)
    polled = page(client.get(f"/rollouts/{rollout.pk}/progress", **HTMX))
    assert "<html" not in polled and 'id="rollout-state">paused</span>' in polled
    assert f'action="/rollouts/{rollout.pk}/resume"' in polled and f'/rollouts/{rollout.pk}/pause"' not in polled
    response = client.post(f"/rollouts/{rollout.pk}/pause", follow=True)
    assert messages_of(response)[-1] == f"rollout {rollout.pk} is paused; it cannot be paused"
    client.post(f"/rollouts/{rollout.pk}/resume")
    assert Rollout.objects.get(pk=rollout.pk).state == "scheduled"  # resumed before its time: waits for it
    Rollout.objects.filter(pk=rollout.pk).update(start_at=timezone.now())
    controller.pass_once()
    assert list(Operation.objects.filter(kind="update").values_list("instance_name", flat=True)) == ["bee"]
    response = client.post(f"/rollouts/{rollout.pk}/cancel", follow=True)
    assert f"Rollout {rollout.pk} is cancelled." in messages_of(response)
    finished = page(client.get(f"/rollouts/{rollout.pk}/progress", **HTMX))
    assert "hx-get" not in finished and "cancelled by alice" in finished and "not touched" in finished
    assert "<button" not in finished
    assert set(AuditEntry.objects.filter(action__startswith="rollout").values_list("via", flat=True)) == {"ui"}


def test_bad_input_shows_the_service_layers_line_and_creates_nothing(world):
    client = client_for(world, "admin")
    for changes, message in (({"version": "9.9"}, "demo has no version '9.9'"),
                             ({"canaries": "cat"}, "no demo instance you may update named cat"),
                             ({"organisation": ""}, "name the organisation whose instances to update (--org)")):
        response = client.post("/rollouts", {**FORM, **changes})
        assert response.status_code == 200
        assert len(errors_of(response)) == 1 and errors_of(response)[0].startswith(message), errors_of(response)
    response = client.post("/rollouts", {**FORM, "batch": "0", "start_at": "soon"})
    assert response.status_code == 200 and 'class="field invalid"' in page(response)
    assert not Rollout.objects.exists()


def test_a_member_sees_the_rollout_but_may_not_start_or_control_it_and_an_outsider_gets_404(world):
    rollout_id = client_for(world, "admin").post("/rollouts", FORM)["Location"].rsplit("/", 1)[1]
    member = client_for(world, "member")
    text = page(member.get(f"/rollouts/{rollout_id}"))
    assert 'id="rollout-state">scheduled</span>' in text and "<button" not in text.split('id="rollout"')[1]
    response = member.post(f"/rollouts/{rollout_id}/cancel", follow=True)
    assert any("your role does not allow cancel" in m for m in messages_of(response))
    member.post("/rollouts", {**FORM, "version": "2.0"})
    assert Rollout.objects.count() == 1 and Rollout.objects.get().state == RolloutState.SCHEDULED
    outsider = client_for(world, "outsider")
    assert outsider.get(f"/rollouts/{rollout_id}").status_code == 404
    assert outsider.get(f"/rollouts/{rollout_id}/progress", **HTMX).status_code == 404
    assert outsider.post(f"/rollouts/{rollout_id}/cancel").status_code == 404
    assert f"/rollouts/{rollout_id}" not in page(outsider.get("/rollouts"))
    assert Rollout.objects.get().state == RolloutState.SCHEDULED


def test_the_rollout_buttons_need_their_csrf_token(world):
    rollout_id = client_for(world, "admin").post("/rollouts", FORM)["Location"].rsplit("/", 1)[1]
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["admin"])
    assert client.post(f"/rollouts/{rollout_id}/cancel").status_code == 403
    assert client.post("/rollouts", FORM).status_code == 403
    assert Rollout.objects.get().state == RolloutState.SCHEDULED


# -- the organisation's update window --------------------------------------------------------------------


def test_an_admin_sets_and_clears_the_update_window_on_the_organisation_page(world):
    client = client_for(world, "admin")
    text = page(client.get("/orgs/acme"))
    assert "<h2>Update window</h2>" in text and "Rollouts update its instances at any time." in text
    assert 'action="/orgs/acme/window"' in text
    response = client.post("/orgs/acme/window", {"cron": "0 2 * * 6", "minutes": "240"}, follow=True)
    assert "Update window of acme set." in messages_of(response)
    assert "opens at <code>0 2 * * 6</code> (cron, UTC) and stays open 240 minutes" in page(response)
    organisation = Organisation.objects.get(slug="acme")
    assert (organisation.update_window, organisation.update_window_minutes) == ("0 2 * * 6", 240)
    assert "<td><code>0 2 * * 6</code>, 240 min</td>" in page(client.get("/orgs"))
    response = client.post("/orgs/acme/window", {"cron": "0 2 * * 6", "minutes": "240", "none": ""}, follow=True)
    assert "acme: rollouts update its instances at any time." in messages_of(response)
    assert Organisation.objects.get(slug="acme").update_window == ""


@pytest.mark.parametrize("data,message", [
    ({"cron": "at night", "minutes": "60"}, "not a cron schedule: 'at night'"),
    ({"cron": "0 2 * * 6", "minutes": "0"}, "a window lasts 1 minute to 7 days (--minutes)"),
    ({"cron": "0 2 * * 6", "minutes": "many"}, "minutes: give a whole number"),
    ({"cron": "", "minutes": "60"}, "give the cron expression (UTC) at which the window opens"),
])
def test_a_bad_update_window_gets_one_line_and_changes_nothing(world, data, message):
    response = client_for(world, "admin").post("/orgs/acme/window", data, follow=True)
    assert any(m.startswith(message) for m in messages_of(response)), messages_of(response)
    assert Organisation.objects.get(slug="acme").update_window == ""


def test_members_see_the_window_but_not_its_form_and_outsiders_get_404(world):
    Organisation.objects.filter(slug="acme").update(update_window="0 2 * * 6", update_window_minutes=60)
    member = client_for(world, "member")
    text = page(member.get("/orgs/acme"))
    assert "<code>0 2 * * 6</code>" in text and 'action="/orgs/acme/window"' not in text
    response = member.post("/orgs/acme/window", {"none": ""}, follow=True)
    assert any("your role does not allow update" in m for m in messages_of(response))
    assert client_for(world, "outsider").post("/orgs/acme/window", {"none": ""}).status_code == 404
    assert Organisation.objects.get(slug="acme").update_window == "0 2 * * 6"
