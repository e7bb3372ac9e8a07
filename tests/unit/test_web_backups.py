"""The Backups section of the instance page and the dashboard's backup column, through Django's test client.

`kestrel` (acme) runs with two backups, the older one verified; `quokka` (globex) runs with one.
"""

import html
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from hafen.access.models import AuditEntry
from hafen.config import get_settings
from hafen.instances import services
from hafen.instances.models import BackupPolicy, Instance, Lock, Operation, Snapshot
from tests.unit.conftest import LOCAL

OLD, NEW, OTHER = "a1b2c3d4e5f6a7b8", "0badc0de11223344", "feedface55667788"
BUTTONS = ("backup", "verify", "restore", "restore-into", "clone", "policy")


@pytest.fixture
def world(people, running_instance, controller, snapshot):
    running_instance("kestrel", organisation="acme")
    running_instance("quokka", organisation="globex")
    snapshot("kestrel", OLD, created_at=timezone.now() - timedelta(days=1), verification="verified",
             verified_at=timezone.now() - timedelta(hours=20))
    snapshot("kestrel", NEW, reason="manual", verification="failed",
             verification_error="fingerprint: motions: 12 rows, expected 13")
    snapshot("quokka", OTHER)
    controller.heartbeat()
    return people


def client_for(people, role):
    client = Client()
    client.force_login(people.users[role])
    return client


def page(response):
    return response.content.decode()


def messages_of(response):
    parts = page(response).split('<li class="message ')[1:]
    return [html.unescape(part.split(">", 1)[1].split("</li>")[0]) for part in parts]


def _state():
    return (Operation.objects.count(), Snapshot.objects.count(), Instance.objects.count(),
            BackupPolicy.objects.count())


def test_member_sees_the_list_but_no_buttons(world):
    text = page(client_for(world, "member").get("/instances/kestrel"))
    section = text.split('id="backups"')[1].split("</section>")[0]
    for column in ("ID", "Time", "Size", "Added", "Version", "Reason", "Status", "Verification"):
        assert f">{column}</th>" in section, column
    assert OLD[:8] in section and NEW[:8] in section and OTHER[:8] not in section
    assert "50.0 MB" in section and "1.0 MB" in section and "manual" in section and "scheduled" in section
    assert "fingerprint: motions: 12 rows, expected 13" in section
    assert "keep 7 daily, 4 weekly, 6 monthly" in section
    assert f"verification of backup {NEW[:8]} failed: fingerprint: motions" in section.split('id="backup-problems"')[1]
    for button in BUTTONS:
        assert f'<button name="{button}"' not in section, button
    assert '<button name="verify"' not in page(client_for(world, "member").get("/instances/kestrel/backups"))


def test_admin_sees_every_button(world):
    text = page(client_for(world, "admin").get("/instances/kestrel"))
    for button in BUTTONS:
        assert f'<button name="{button}"' in text, button
    assert f'action="/instances/kestrel/backups/{OLD[:8]}/verify"' in text
    assert 'hx-get="/instances/kestrel/backups"' in text


def test_the_list_is_polled_and_shows_new_backups(world, snapshot):
    client = client_for(world, "member")
    snapshot("kestrel", "99998888aaaabbbb", reason="manual", status="running", total_bytes=None, added_bytes=None)
    text = page(client.get("/instances/kestrel/backups", HTTP_HX_REQUEST="true"))
    assert "<html" not in text and "99998888" in text and ">running<" in text


def test_admin_backs_up_now(world):
    response = client_for(world, "admin").post("/instances/kestrel/backup")
    operation = Operation.objects.get(kind="backup")
    assert response["Location"] == f"/operations/{operation.id}"
    assert Snapshot.objects.get(pk=operation.params["snapshot"]).reason == "manual"


def test_member_may_not_back_up_or_restore(world):
    client = client_for(world, "member")
    before = _state()
    refused = client.post("/instances/kestrel/backup", follow=True)
    assert any("does not allow backup" in m for m in messages_of(refused))
    client.post("/instances/kestrel/restore", {"snapshot": OLD[:8], "confirm": "kestrel"})
    client.post("/instances/kestrel/clone", {"new": "copy"})
    client.post(f"/instances/kestrel/backups/{OLD[:8]}/verify")
    client.post("/instances/kestrel/backup-policy", {"schedule": "0 3 * * *", "keep_daily": 1, "keep_weekly": 1,
                                                       "keep_monthly": 1, "enabled": "on"})
    assert _state() == before


@pytest.mark.parametrize("typed", ["", "kestre", "quokka", "KESTREL"])
def test_restore_without_the_right_typed_name_changes_nothing(world, typed):
    before = _state()
    refused = client_for(world, "admin").post("/instances/kestrel/restore", {"snapshot": OLD[:8], "confirm": typed},
                                              follow=True)
    assert refused.redirect_chain[-1][0] == "/instances/kestrel"
    assert any("type the name kestrel to restore it in place" in m for m in messages_of(refused))
    assert _state() == before
    assert Instance.objects.get(name="kestrel").state == "running"
    assert AuditEntry.objects.get(action="restore").result == "refused"


def test_restore_in_place_with_the_typed_name(world):
    response = client_for(world, "admin").post("/instances/kestrel/restore", {"snapshot": OLD[:8],
                                                                             "confirm": "kestrel"})
    operation = Operation.objects.get(kind="restore")
    assert response["Location"] == f"/operations/{operation.id}"
    assert Snapshot.objects.get(pk=operation.params["restore"]).restic_id == OLD
    entry = AuditEntry.objects.get(action="restore")
    assert (entry.actor, entry.via, entry.result) == ("alice", "ui", "ok")


def test_a_restore_lock_refuses_it_with_its_reason(world):
    Lock.objects.create(instance=Instance.objects.get(name="kestrel"), actions=["restore"], reason="AGM is final",
                        created_by="alice")
    refused = client_for(world, "admin").post("/instances/kestrel/restore",
                                              {"snapshot": OLD[:8], "confirm": "kestrel"}, follow=True)
    assert any("locked against restore: AGM is final" in m for m in messages_of(refused))
    assert not Operation.objects.filter(kind="restore").exists()


def test_restore_into_shows_the_new_admin_password_once(world):
    client = client_for(world, "admin")
    response = client.post("/instances/kestrel/restore-into", {"snapshot": OLD[:8], "new": "kestrel-old",
                                                              "domain": "old.example.org"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    password = services.credentials(LOCAL, "kestrel-old").password
    text = page(response)
    assert password in text and "http://old.example.org:18080/" in text
    operation = Operation.objects.get(kind="create", instance_name="kestrel-old")
    assert f'href="/operations/{operation.id}"' in text
    assert Instance.objects.get(name="kestrel-old").organisation.slug == "acme"
    assert password not in page(client.get("/instances/kestrel-old"))
    assert AuditEntry.objects.get(action="restore").detail["into"] == "kestrel-old"


def test_restore_into_a_taken_name_says_so(world):
    before = _state()
    refused = client_for(world, "admin").post("/instances/kestrel/restore-into",
                                              {"snapshot": OLD[:8], "new": "quokka"}, follow=True)
    assert any("exists already" in m for m in messages_of(refused))
    assert _state() == before


def test_clone_shows_the_new_admin_password_once(world):
    response = client_for(world, "admin").post("/instances/kestrel/clone", {"new": "kestrel-two"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    assert services.credentials(LOCAL, "kestrel-two").password in page(response)
    assert Operation.objects.filter(kind="backup", instance_name="kestrel").exists()
    assert AuditEntry.objects.get(action="clone").result == "ok"


def test_verify_leads_to_the_operation_and_back_to_the_backups(world):
    client = client_for(world, "admin")
    response = client.post(f"/instances/kestrel/backups/{OLD[:8]}/verify")
    operation = Operation.objects.get(kind="verify")
    assert response["Location"] == f"/operations/{operation.id}"
    assert Snapshot.objects.get(restic_id=OLD).verification == "verifying"
    text = page(client.get(response["Location"]))
    assert 'href="/instances/kestrel#backups"' in text
    assert f'href="/instances/{operation.instance_name}"' not in text  # the sandbox has no page


def test_admin_edits_the_policy(world):
    client = client_for(world, "admin")
    saved = client.post("/instances/kestrel/backup-policy", {"schedule": "30 4 * * 1", "keep_daily": "3",
                                                               "keep_weekly": "2", "keep_monthly": "12"}, follow=True)
    assert "Backup policy saved." in messages_of(saved)
    row = BackupPolicy.objects.get(instance__name="kestrel")
    assert (row.schedule, row.keep_daily, row.keep_weekly, row.keep_monthly, row.enabled) == \
        ("30 4 * * 1", 3, 2, 12, False)
    assert "scheduled backups off" in page(saved)
    bad = client.post("/instances/kestrel/backup-policy", {"schedule": "at noon", "keep_daily": "3",
                                                             "keep_weekly": "2", "keep_monthly": "12"}, follow=True)
    assert any("not a cron schedule" in m for m in messages_of(bad))
    negative = client.post("/instances/kestrel/backup-policy", {"schedule": "0 1 * * *", "keep_daily": "-1",
                                                                  "keep_weekly": "2", "keep_monthly": "12"},
                           follow=True)
    assert any(m.startswith("keep daily:") for m in messages_of(negative))
    assert BackupPolicy.objects.get(instance__name="kestrel").schedule == "30 4 * * 1"


def test_outsider_gets_404_for_the_backups_of_another_organisation(world):
    client = client_for(world, "outsider")
    before = _state()
    assert client.get("/instances/kestrel/backups").status_code == 404
    for url, data in [("/instances/kestrel/backup", {}), ("/instances/kestrel/restore", {"snapshot": OLD[:8]}),
                      ("/instances/kestrel/restore-into", {"snapshot": OLD[:8], "new": "mine"}),
                      ("/instances/kestrel/restore-into", {}), ("/instances/kestrel/clone", {"new": "mine"}),
                      ("/instances/kestrel/clone", {}), (f"/instances/kestrel/backups/{OLD[:8]}/verify", {}),
                      ("/instances/kestrel/backup-policy", {})]:
        assert client.post(url, data).status_code == 404, url
    assert _state() == before


def test_a_repository_on_this_host_is_warned_about(world, monkeypatch):
    client = client_for(world, "member")
    assert 'id="backups-on-host"' in page(client.get("/instances/kestrel"))
    monkeypatch.setattr(get_settings(), "backup_repository", "sftp:backup@vault.example.org:/srv/restic")
    assert 'id="backups-on-host"' not in page(client.get("/instances/kestrel"))


def test_dashboard_shows_the_last_verified_backup_and_flags_problems(world):
    Snapshot.objects.filter(restic_id=NEW).update(verification="unverified", verification_error="")
    Instance.objects.filter(name="quokka").update(created_at=timezone.now() - timedelta(days=3))
    Snapshot.objects.create(instance=Instance.objects.get(name="quokka"), instance_name="quokka",
                            organisation=world.globex, app="demo", version="1.0", status="failed",
                            error="restic: repository is locked")
    client = client_for(world, "operator")
    for url in ("/", "/rows"):
        text = page(client.get(url))
        kestrel = text.split('data-instance="kestrel"')[1].split("</tr>")[0]
        quokka = text.split('data-instance="quokka"')[1].split("</tr>")[0]
        assert "backup-flagged" in quokka and "backup-flagged" not in kestrel
        verified = Snapshot.objects.get(restic_id=OLD).created_at.strftime("%Y-%m-%d %H:%M:%S")
        assert verified in kestrel
        assert 'title="the last backup failed: restic: repository is locked; no verified backup in the last ' \
               '48 hours"' in quokka
        assert "never" in quokka and "(+1)" in quokka
    assert "Last verified backup" in page(client.get("/"))
