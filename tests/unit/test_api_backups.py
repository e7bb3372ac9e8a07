"""The backup endpoints of the REST API: who may do what, bad input, and the audit log.

`eve` (acme) runs and has two backups; `quokka` (globex) runs and has one. The people are
those of conftest: an operator, an admin and a member of acme, an outsider (the admin of
globex), and a read token of acme's admin.
"""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from hafen.access.models import AuditEntry
from hafen.instances.models import BackupPolicy, Instance, Lock, Operation, Repository, Snapshot

ROLES = ("operator", "admin", "member", "outsider", "read")
OLD, NEW, OTHER = "a1b2c3d4e5f6a7b8", "0badc0de11223344", "feedface55667788"

# (method, path, body, expected per role); "ok" is any 2xx.
MATRIX = [
    ("get", "/instances/eve/backups", None, ("ok", "ok", "ok", 404, "ok")),
    ("post", "/instances/eve/backups", None, ("ok", "ok", 403, 404, 403)),
    ("post", "/instances/eve/restore", {"snapshot": OLD[:8], "confirm": "eve"}, ("ok", "ok", 403, 404, 403)),
    ("post", "/instances/eve/restore", {"snapshot": "latest", "into": "neu"}, ("ok", "ok", 403, 404, 403)),
    ("post", "/instances/eve/clone", {"name": "neu"}, ("ok", "ok", 403, 404, 403)),
    ("post", "/instances/eve/backups/latest/verify", None, ("ok", "ok", 403, 404, 403)),
    ("get", "/instances/eve/backup-policy", None, ("ok", "ok", "ok", 404, "ok")),
    ("put", "/instances/eve/backup-policy", {"keep_daily": 3}, ("ok", "ok", 403, 404, 403)),
    ("get", "/backups/repository", None, ("ok", "ok", "ok", "ok", "ok")),
    ("post", "/backups/repository/check", None, ("ok", 404, 404, 404, 404)),
]


@pytest.fixture
def world(people, running_instance, controller, snapshot):
    running_instance("eve", organisation="acme")
    running_instance("quokka", organisation="globex")
    snapshot("eve", OLD, created_at=timezone.now() - timedelta(days=1), verification="verified")
    snapshot("eve", NEW, reason="manual")
    snapshot("quokka", OTHER)
    controller.heartbeat()
    return people


def call(people, role, method, path, body=None):
    kwargs = {"content_type": "application/json", **people.headers(role)}
    if body is not None:
        kwargs["data"] = body
    return getattr(Client(), method)("/api/v1" + path, **kwargs)


def _state():
    return (Operation.objects.count(), Snapshot.objects.count(), Instance.objects.count(),
            BackupPolicy.objects.count(), Repository.objects.filter(maintenance_requested=True).count())


@pytest.mark.parametrize("role_index,role", list(enumerate(ROLES)))
@pytest.mark.parametrize("method,path,body,expected", MATRIX, ids=[f"{m} {p} {b}" for m, p, b, _ in MATRIX])
def test_matrix(world, role_index, role, method, path, body, expected):
    before = _state()
    response = call(world, role, method, path, body)
    want = expected[role_index]
    if want == "ok":
        assert 200 <= response.status_code < 300, response.content
        return
    assert response.status_code == want, response.content
    assert set(response.json()) == {"error"}
    assert _state() == before  # a refusal changes nothing
    if want == 404:
        assert OLD[:8] not in response.content.decode() and "Acme" not in response.content.decode()


def test_listing_shows_backups_policy_status_and_repository(world):
    data = call(world, "member", "get", "/instances/eve/backups").json()
    assert [item["id"] for item in data["items"]] == [NEW[:8], OLD[:8]]
    newest = data["items"][0]
    assert (newest["reason"], newest["status"], newest["size"], newest["added"]) == ("manual", "ok", 52428800, 1048576)
    assert data["policy"]["set_for"] == "installation" and data["policy"]["next_backup"]
    assert data["status"]["last_verified_id"] == OLD[:8]
    assert data["repository"] == {"repository": data["repository"]["repository"], "off_host": False}
    Repository.objects.update_or_create(pk=1, defaults={"check_ok": True, "check_message": "no errors were found"})
    assert call(world, "operator", "get", "/instances/eve/backups").json()["repository"]["check_ok"] is True
    repository = call(world, "operator", "get", "/backups/repository").json()
    assert (repository["check_ok"], repository["maintenance_running"]) == (True, False)
    assert set(call(world, "admin", "get", "/backups/repository").json()) == {"repository", "off_host"}


def test_backup_now_queues_a_backup_operation(world):
    response = call(world, "admin", "post", "/instances/eve/backups")
    assert response.status_code == 202
    operation = Operation.objects.get(pk=response.json()["id"])
    assert (operation.kind, operation.instance_name) == ("backup", "eve")
    assert Snapshot.objects.get(pk=operation.params["snapshot"]).reason == "manual"


def test_restore_in_place_takes_a_safety_backup_and_is_audited(world):
    response = call(world, "admin", "post", "/instances/eve/restore", {"snapshot": OLD[:10], "confirm": "eve"})
    assert response.status_code == 202, response.content
    operation = Operation.objects.get(pk=response.json()["id"])
    assert operation.kind == "restore"
    assert Snapshot.objects.get(pk=operation.params["restore"]).restic_id == OLD
    assert Snapshot.objects.get(pk=operation.params["safety"]).reason == "safety"
    entry = AuditEntry.objects.get(action="restore")
    assert (entry.actor, entry.via, entry.result, entry.instance_name) == ("alice", "api", "ok", "eve")
    assert (entry.detail["snapshot"], entry.operation_id, entry.organisation.slug) == (OLD[:8], operation.id, "acme")


@pytest.mark.parametrize("confirm", [None, "", "ev", "quokka"])
def test_restore_in_place_needs_the_name_typed_again(world, confirm):
    before = _state()
    response = call(world, "operator", "post", "/instances/eve/restore", {"snapshot": "latest", "confirm": confirm})
    assert response.status_code == 400
    assert "type the name eve" in response.json()["error"]["message"]
    assert _state() == before
    assert AuditEntry.objects.get(action="restore").result == "refused"


def test_restore_into_a_new_instance(world):
    response = call(world, "admin", "post", "/instances/eve/restore",
                    {"snapshot": OLD[:8], "into": "eve-copy", "domain": "copy.example.org"})
    assert response.status_code == 202, response.content
    created = Instance.objects.get(name="eve-copy")
    assert (created.organisation.slug, created.domain) == ("acme", "copy.example.org")
    operation = Operation.objects.get(pk=response.json()["id"])
    assert (operation.kind, operation.instance_name) == ("create", "eve-copy")
    assert Snapshot.objects.get(pk=operation.params["restore"]).restic_id == OLD
    entry = AuditEntry.objects.get(action="restore")
    assert (entry.result, entry.detail["into"], entry.detail["snapshot"]) == ("ok", "eve-copy", OLD[:8])


def test_clone_backs_up_and_creates_and_is_audited(world):
    response = call(world, "admin", "post", "/instances/eve/clone", {"name": "eve-two"})
    assert response.status_code == 202, response.content
    assert response.json()["instance"] == "eve-two" and response.json()["kind"] == "create"
    assert Operation.objects.filter(kind="backup", instance_name="eve").exists()
    assert Instance.objects.get(name="eve-two").organisation.slug == "acme"
    entry = AuditEntry.objects.get(action="clone")
    assert (entry.actor, entry.result, entry.instance_name, entry.detail["into"]) == ("alice", "ok", "eve", "eve-two")


@pytest.mark.parametrize("role", ["member", "outsider", "read"])
def test_refused_restores_and_clones_are_audited_too(world, role):
    call(world, role, "post", "/instances/eve/restore", {"snapshot": "latest", "confirm": "eve"})
    call(world, role, "post", "/instances/eve/restore", {"snapshot": "latest", "into": "neu"})
    call(world, role, "post", "/instances/eve/clone", {"name": "neu"})
    results = sorted((e.action, e.result) for e in AuditEntry.objects.filter(action__in=("restore", "clone")))
    assert results == [("clone", "refused"), ("restore", "refused"), ("restore", "refused")]


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/instances/eve/restore", {"snapshot": "deadbeef", "confirm": "eve"}, 404, "no backup deadbeef of eve"),
    ("/instances/eve/restore", {"snapshot": "deadbeef", "into": "neu"}, 404, "no backup deadbeef of eve"),
    ("/instances/eve/backups/deadbeef99/verify", None, 404, "no backup deadbeef99 of eve"),
    ("/instances/eve/restore", {"snapshot": "a1b2", "confirm": "eve"}, 400, "8 or more hex digits"),
    ("/instances/eve/restore", {"snapshot": "not-an-id", "into": "neu"}, 400, "8 or more hex digits"),
    ("/instances/eve/backups/zzzzzzzz/verify", None, 400, "8 or more hex digits"),
    ("/instances/eve/restore", {"snapshot": "latest", "into": "quokka"}, 409, "exists already"),
    ("/instances/eve/restore", {"snapshot": "latest", "into": "eve"}, 409, "exists already"),
    ("/instances/eve/clone", {"name": "quokka"}, 409, "exists already"),
    ("/instances/eve/clone", {"name": "Not A Name"}, 400, "invalid"),
    ("/instances/eve/restore", {"snapshot": "latest", "into": "neu", "domain": "quokka.localhost"}, 409, "taken"),
    ("/instances/eve/restore", {"snapshot": "latest", "domain": "x.example.org", "confirm": "eve"}, 400, "go with"),
    # a backup of another organisation's instance, named through one of acme's, or by its own name
    ("/instances/eve/restore", {"snapshot": OTHER[:8], "confirm": "eve"}, 404, "no backup"),
    ("/instances/eve/restore", {"snapshot": OTHER[:8], "into": "neu"}, 404, "no backup"),
    ("/instances/quokka/restore", {"snapshot": OTHER[:8], "into": "neu"}, 404, "no backup"),
    ("/instances/quokka/backups/latest/verify", None, 404, "no backup"),
    ("/instances/eve/backup-policy", None, 400, None),
])
def test_bad_input_changes_nothing(world, path, body, status, message):
    before = _state()
    method = "put" if path.endswith("backup-policy") else "post"
    response = call(world, "admin", method, path, body if method == "post" else {"schedule_expr": "every day"})
    assert response.status_code == status, response.content
    if message:
        assert message in response.json()["error"]["message"]
    assert _state() == before


def test_a_restore_lock_refuses_a_restore_in_place(world):
    Lock.objects.create(instance=Instance.objects.get(name="eve"), actions=["restore"], reason="AGM data is final",
                        created_by="olga", by_operator=True)
    for role in ("operator", "admin"):
        response = call(world, role, "post", "/instances/eve/restore", {"snapshot": "latest", "confirm": "eve"})
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "locked"
        assert "AGM data is final" in response.json()["error"]["message"]
    assert not Operation.objects.filter(kind="restore").exists()
    assert AuditEntry.objects.filter(action="restore", result="refused").count() == 2


def test_policy_is_read_and_set_per_instance(world):
    assert call(world, "member", "get", "/instances/eve/backup-policy").json()["set_for"] == "installation"
    changed = call(world, "admin", "put", "/instances/eve/backup-policy",
                   {"schedule_expr": "30 3 * * 1", "keep_weekly": 8})
    assert changed.status_code == 200, changed.content
    policy = changed.json()
    assert (policy["schedule"], policy["keep_weekly"], policy["keep_daily"], policy["set_for"]) == \
        ("30 3 * * 1", 8, 7, "instance")
    off = call(world, "admin", "put", "/instances/eve/backup-policy", {"enabled": False}).json()
    assert (off["enabled"], off["next_backup"], off["schedule"]) == (False, None, "30 3 * * 1")
    assert call(world, "admin", "put", "/instances/eve/backup-policy", {"keep_daily": -1}).status_code == 400
    assert call(world, "outsider", "get", "/instances/quokka/backup-policy").json()["set_for"] == "installation"


def test_repository_check_is_for_operators(world):
    response = call(world, "operator", "post", "/backups/repository/check")
    assert response.status_code == 202
    assert Repository.objects.get(pk=1).maintenance_requested
    assert AuditEntry.objects.filter(action="repository-check", result="ok").exists()


def test_instance_list_and_detail_carry_the_state_of_backups(world):
    Instance.objects.filter(name="quokka").update(created_at=timezone.now() - timedelta(days=3))
    Snapshot.objects.filter(restic_id=OTHER).update(created_at=timezone.now() - timedelta(days=3))
    Snapshot.objects.create(instance=Instance.objects.get(name="quokka"), instance_name="quokka",
                            organisation=world.globex, app="demo", version="1.0", status="failed",
                            error="restic: repository is locked")
    items = {i["name"]: i["backups"] for i in call(world, "operator", "get", "/instances").json()["items"]}
    assert items["eve"]["problems"] == [] and items["eve"]["last_verified_id"] == OLD[:8]
    assert items["quokka"]["problems"] == ["the last backup failed: restic: repository is locked",
                                           "no verified backup in the last 48 hours"]
    detail = call(world, "member", "get", "/instances/eve").json()["backups"]
    assert (detail["off_host"], detail["policy"]["set_for"], detail["last_verified_id"]) == \
        (False, "installation", OLD[:8])


def test_operation_steps_carry_their_detail(world):
    operation = Operation.objects.create(
        instance=Instance.objects.get(name="eve"), instance_name="eve", organisation=world.acme, kind="backup",
        state="running", steps=[{"name": "files", "title": "back up the files", "state": "running",
                                 "detail": "12 of 40 files, 3.1 MiB"}])
    step = call(world, "member", "get", f"/operations/{operation.id}").json()["steps"][0]
    assert step["detail"] == "12 of 40 files, 3.1 MiB"
