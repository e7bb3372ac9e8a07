"""Backups, restores, clones and verifications as the controller runs them, on the fake engine.

The jobs' results come from a small stand-in for the backup image (`Restic` below): a backup
records the instance's fingerprint under a new snapshot id, a restore reports the fingerprint of the
snapshot it restored, a check reports what the sandbox holds. What runs where, in which order,
and what is left behind, is the controller's, and is what these tests check.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from hafen.access.models import AuditEntry
from hafen.access.policy import Actor
from hafen.backup import schedule
from hafen.controller import backups as scheduler
from hafen.engine.base import ServiceSpec
from hafen.errors import Conflict, InvalidInput, Locked, NotFound
from hafen.instances import backups, services
from hafen.instances.models import (
    BackupPolicy,
    Instance,
    Operation,
    OpState,
    Repository,
    Snapshot,
    SnapshotStatus,
    State,
    Verification,
)

LOCAL = Actor.local()


class Restic:
    """What the backup image prints, per command; `data` is each instance's current fingerprint."""

    def __init__(self) -> None:
        self.data: dict[str, dict] = {}
        self.snapshots: dict[str, dict] = {}
        self.restored: dict[str, dict] = {}
        self.fail: dict[str, str] = {}  # command -> error line
        self.corrupt: set[str] = set()  # snapshot ids whose restore comes back different
        self.forgotten: list[str] = []
        self.commands: list[str] = []

    def __call__(self, spec: ServiceSpec) -> list[str]:
        command = spec.command or []
        if spec.image != "hafen/backup:1":
            return []
        instance = spec.labels.get("hafen.instance", "")
        what = command[1] if command[0] == "hafen-backup" else "maintain"
        self.commands.append(f"{what} {instance}".strip())
        if what in self.fail:
            return ["restic: something", f"HAFEN-ERROR {self.fail[what]}"]
        if what == "backup":
            files = uuid.uuid4().hex * 2
            fingerprint = self.data.setdefault(instance, {"tables": {"notes": 1}, "schema": "", "volumes": {}})
            manifest = {**json.loads(spec.env["HAFEN_MANIFEST"]), "fingerprint": dict(fingerprint),
                        "volumes": ["media"]}
            self.snapshots[files] = manifest
            result = {"db_snapshot": uuid.uuid4().hex * 2, "files_snapshot": files, "total_bytes": 2000,
                      "added_bytes": 300, "manifest": manifest}
        elif what == "restore":
            snapshot = spec.env["HAFEN_SNAPSHOT"]
            fingerprint = dict(self.snapshots[snapshot]["fingerprint"])
            if snapshot in self.corrupt:
                fingerprint["tables"] = {"notes": 0}
            self.data[instance] = fingerprint
            result = {"manifest": self.snapshots[snapshot], "fingerprint": fingerprint}
        elif what == "check-instance":
            result = {"fingerprint": self.data.get(instance, {}), "login": {"ok": True, "status": 200}}
        else:
            ids = command[4:]
            self.forgotten += ids
            return [f"HAFEN-RESULT {json.dumps({'forgotten': ids})}",
                    f"HAFEN-RESULT {json.dumps({'prune': True, 'check': {'ok': True, 'message': ''}})}"]
        return ["progress...", f"HAFEN-RESULT {json.dumps(result)}"]


@pytest.fixture(autouse=True)
def _converge(converge):
    global converge_
    converge_ = converge


def converge(controller, **kwargs):
    return converge_(controller, **kwargs)


converge_ = None


@pytest.fixture
def restic(engine, monkeypatch):
    fake = Restic()
    engine.job_output = fake
    monkeypatch.setattr(scheduler, "INTERVAL", 0.0)
    return fake


@pytest.fixture
def demo(running_instance, restic):
    return running_instance("eve")


def objects_named(engine, part):
    return {n for kind in (engine.services, engine.volumes, engine.secrets, engine.networks) for n in kind if part in n}


def finished(op):
    op.refresh_from_db()
    return op


# -- backup and its verification -------------------------------------------------------------------


def test_backup_records_the_snapshot_then_verifies_it_in_a_sandbox_that_goes(controller, engine, demo, restic):
    op = backups.backup(LOCAL, "eve")
    converge(controller)
    assert finished(op).state == OpState.SUCCEEDED, op.error
    snapshot = Snapshot.objects.get()
    assert snapshot.status == SnapshotStatus.OK
    assert len(snapshot.restic_id) == 64 and snapshot.total_bytes == 2000 and snapshot.added_bytes == 300
    assert snapshot.manifest["instance"] == "eve"
    assert snapshot.verification == Verification.VERIFIED, snapshot.verification_error
    assert restic.commands == ["backup eve", f"restore sbx-{snapshot.pk}-" + restic.commands[1].split("-")[-1],
                               restic.commands[2]]
    assert restic.commands[2].startswith("check-instance sbx-")
    # the sandbox, its row and every object of it are gone; so are the jobs and the secrets bundle
    assert not Instance.objects.filter(sandbox=True).exists()
    assert not objects_named(engine, "sbx-")
    assert not objects_named(engine, "_backup") and not objects_named(engine, "_bundle_")
    # the instance itself was never touched
    assert Instance.objects.get(name="eve").state == State.RUNNING


def test_a_sandbox_has_no_edge_network_and_no_route(controller, engine, edge, demo, restic):
    backups.backup(LOCAL, "eve")
    seen_networks: set[str] = set()
    seen_domains: set[str] = set()

    def watch():
        seen_networks.update(n for n in engine.networks if "sbx-" in n)
        seen_domains.update(r for r in controller.edge_state.routes if "sbx-" in r)
        sandbox = engine.services.get(next((n for n in engine.services if "sbx-" in n and n.endswith("_web")), ""))
        if sandbox is not None:
            assert all("_edge" not in n.name for n in sandbox.networks)
        return not Operation.objects.filter(state__in=(OpState.PENDING, OpState.RUNNING)).exists()

    converge(controller, until=watch)
    assert seen_networks and all(n.endswith("_internal") for n in seen_networks)
    assert not seen_domains


def test_a_failed_backup_says_why_and_leaves_the_instance_running(controller, engine, demo, restic):
    restic.fail["backup"] = "the repository is unreachable: dial tcp: connection refused"
    engine.fail_jobs.add("unit-eve_backup")
    op = backups.backup(LOCAL, "eve")
    converge(controller)
    op = finished(op)
    assert op.state == OpState.FAILED
    assert op.error == "backup failed: the repository is unreachable: dial tcp: connection refused"
    snapshot = Snapshot.objects.get()
    assert snapshot.status == SnapshotStatus.FAILED and "unreachable" in snapshot.error
    instance = Instance.objects.get(name="eve")
    assert instance.state == State.RUNNING and instance.error == ""
    assert not objects_named(engine, "_backup")  # the job was cleaned up all the same
    status = backups.status([instance])[instance.pk]
    assert any("the last backup failed" in p for p in status["problems"])
    entry = AuditEntry.objects.get(action="backup", result="failed", via="system")
    assert entry.instance_name == "eve" and "unreachable" in entry.message


def test_a_failed_verification_marks_the_snapshot_and_removes_the_sandbox(controller, engine, demo, restic):
    op = backups.backup(LOCAL, "eve")
    converge(controller, until=lambda: Snapshot.objects.filter(status=SnapshotStatus.OK).exists())
    restic.corrupt.add(Snapshot.objects.get().restic_id)
    converge(controller)
    assert finished(op).state == OpState.SUCCEEDED
    snapshot = Snapshot.objects.get()
    assert snapshot.verification == Verification.FAILED
    assert "table notes: 1 row in the backup, 0 restored" in snapshot.verification_error
    assert not Instance.objects.filter(sandbox=True).exists() and not objects_named(engine, "sbx-")
    verify_op = Operation.objects.get(kind="verify")
    assert verify_op.state == OpState.FAILED
    assert [s["state"] for s in verify_op.steps if s["name"] in ("remove", "remove-data")] == ["done", "done"]
    assert AuditEntry.objects.get(action="verify", result="failed").instance_name == "eve"
    instance = Instance.objects.get(name="eve")
    assert any("verification of backup" in p for p in backups.status([instance])[instance.pk]["problems"])


def test_sandboxes_are_never_listed(controller, demo, restic):
    backups.backup(LOCAL, "eve")
    converge(controller, until=lambda: Instance.objects.filter(sandbox=True).exists())
    assert [i.name for i in services.list_instances(LOCAL)] == ["eve"]
    sandbox = Instance.objects.get(sandbox=True)
    with pytest.raises(NotFound):
        services.get_instance(LOCAL, sandbox.name)
    converge(controller)


# -- restore ---------------------------------------------------------------------------------------


def _backed_up(controller, restic, name="eve", notes=1):
    restic.data[name] = {"tables": {"notes": notes}, "schema": "", "volumes": {}}
    backups.backup(LOCAL, name)
    converge(controller)
    return Snapshot.objects.filter(instance_name=name, reason="manual").first()


def test_restore_in_place_takes_a_safety_backup_and_brings_the_data_back(controller, engine, demo, restic):
    snapshot = _backed_up(controller, restic, notes=1)
    restic.data["eve"] = {"tables": {"notes": 5}, "schema": "", "volumes": {}}
    op = backups.restore(LOCAL, "eve", snapshot.short_id)
    seen_states = set()
    converge(controller, until=lambda: seen_states.add(Instance.objects.get(name="eve").state)
             or finished(op).done)
    assert finished(op).state == OpState.SUCCEEDED, op.error
    assert State.RESTORING in seen_states
    assert restic.data["eve"]["tables"] == {"notes": 1}
    safety = Snapshot.objects.get(reason="safety")
    assert safety.status == SnapshotStatus.OK and restic.snapshots[safety.restic_id]["fingerprint"]["tables"] == {
        "notes": 5}
    names = [s["name"] for s in op.steps]
    assert names.index("safety") < names.index("stop-web") < names.index("restore") < names.index("deploy:web")
    assert "caches-remove" not in names  # the demo app's Redis holds sessions, no cache of the data
    instance = Instance.objects.get(name="eve")
    assert instance.state == State.RUNNING and not instance.maintenance
    assert engine.services["unit-eve_web"].replicas == 1


def test_restore_in_place_starts_the_apps_caches_empty(controller, engine, running_instance, restic):
    """OpenSlides serves its element cache (in Redis) while the database's id is the same: after a
    restore in place, Redis must start empty, or the replaced data would still be served."""
    running_instance("osr", app="openslides")
    snapshot = _backed_up(controller, restic, name="osr")
    engine.calls.clear()
    op = backups.restore(LOCAL, "osr", snapshot.short_id)
    converge(controller, until=lambda: finished(op).done)
    assert finished(op).state == OpState.SUCCEEDED, op.error
    names = [s["name"] for s in op.steps]
    assert names.index("restore") < names.index("caches-remove") < names.index("wait:redis") \
        < names.index("deploy:setup")
    assert "remove_service unit-osr_redis" in engine.calls
    assert engine.calls.index("remove_service unit-osr_redis") < engine.calls.index("apply_service unit-osr_redis")
    assert "unit-osr_redis" in engine.services and "remove_service unit-osr_db" not in engine.calls


def test_a_restore_that_fails_rolls_back_to_the_safety_backup(controller, engine, demo, restic):
    snapshot = _backed_up(controller, restic, notes=1)
    restic.corrupt.add(snapshot.restic_id)
    restic.data["eve"] = {"tables": {"notes": 5}, "schema": "", "volumes": {}}
    op = backups.restore(LOCAL, "eve", snapshot.short_id)
    converge(controller)
    op = finished(op)
    assert op.state == OpState.FAILED
    assert "rolled back to the safety backup" in op.error and "0 restored" in op.error
    assert restic.data["eve"]["tables"] == {"notes": 5}  # as it was before
    instance = Instance.objects.get(name="eve")
    assert instance.state == State.RUNNING and not instance.maintenance and instance.error == ""


def test_restore_into_a_new_instance_and_clone(controller, engine, demo, restic):
    snapshot = _backed_up(controller, restic, notes=3)
    op = backups.restore_into(LOCAL, "eve", snapshot.short_id, "eve2")
    converge(controller)
    assert finished(op).state == OpState.SUCCEEDED, op.error
    assert restic.data["eve2"]["tables"] == {"notes": 3}
    names = [s["name"] for s in op.steps]
    assert names.index("wait:db, redis") < names.index("restore") < names.index("deploy:setup")
    # new secrets, not the source's
    source = {s.name: s.ciphertext for s in Instance.objects.get(name="eve").secrets.all()}
    assert services.credentials(LOCAL, "eve2").password != services.credentials(LOCAL, "eve").password
    assert source  # (ciphertexts differ anyway; the plaintexts above are what matters)

    restic.data["eve"] = {"tables": {"notes": 4}, "schema": "", "volumes": {}}
    op = backups.clone(LOCAL, "eve", "eve3")
    converge(controller)
    assert finished(op).state == OpState.SUCCEEDED, op.error
    assert restic.data["eve3"]["tables"] == {"notes": 4}
    assert Snapshot.objects.get(reason="clone").status == SnapshotStatus.OK


def test_restore_of_an_erased_instance_under_its_own_name(controller, engine, demo, restic):
    snapshot = _backed_up(controller, restic, notes=2)
    services.erase(LOCAL, "eve")
    converge(controller)
    assert not Instance.objects.filter(name="eve").exists()
    listed = backups.snapshots(LOCAL, "eve")
    assert [s.pk for s in listed] == [snapshot.pk]
    op = backups.restore_into(LOCAL, "eve", "latest", "eve")
    converge(controller)
    assert finished(op).state == OpState.SUCCEEDED, op.error
    assert restic.data["eve"]["tables"] == {"notes": 2}


def test_bad_restores_are_refused_and_change_nothing(controller, demo, running_instance, restic, people):
    snapshot = _backed_up(controller, restic)
    running_instance("bob")
    before = (Operation.objects.count(), Instance.objects.count(), Snapshot.objects.count())
    with pytest.raises(Conflict, match="exists already"):
        backups.restore_into(LOCAL, "eve", snapshot.short_id, "bob")
    with pytest.raises(NotFound):
        backups.restore(LOCAL, "eve", "deadbeefdeadbeef")
    with pytest.raises(InvalidInput):
        backups.restore(LOCAL, "eve", "xyz")
    with pytest.raises(NotFound):  # bob has no backups: eve's snapshot is not one of his
        backups.restore(LOCAL, "bob", snapshot.short_id)
    services.lock(LOCAL, "eve", ["restore"], "event today")
    with pytest.raises(Locked):
        backups.restore(LOCAL, "eve", snapshot.short_id)
    assert (Operation.objects.count(), Instance.objects.count(), Snapshot.objects.count()) == before


def test_another_organisations_snapshot_is_not_found(controller, running_instance, restic, people):
    running_instance("eve", organisation="acme")
    snapshot = _backed_up(controller, restic)
    outsider = people.actor("outsider")
    with pytest.raises(NotFound):
        backups.restore_into(outsider, "eve", snapshot.short_id, "stolen")
    with pytest.raises(NotFound):
        backups.snapshots(outsider, "eve")
    assert not Instance.objects.filter(name="stolen").exists()


# -- the scheduler -----------------------------------------------------------------------------------


def test_due_backups_are_queued_at_most_concurrency_at_once(controller, running_instance, restic, monkeypatch):
    for name in ("aaa", "bbb", "ccc"):
        running_instance(name)
    Instance.objects.update(created_at=timezone.now() - timedelta(days=2))
    BackupPolicy.objects.create(schedule="* * * * *")  # the installation's: every minute
    real_slot = schedule.current_slot
    slot = timezone.now() - timedelta(seconds=1)
    # every instance's backup is due once (a slot that moved with the clock made them due again on a slow
    # machine); the repository's maintenance keeps its own schedule (04:30), else a pass that takes longer
    # than a second would start it between two backups and hold the third
    monkeypatch.setattr("hafen.backup.schedule.current_slot", lambda expr, name, now: real_slot(expr, name, now)
                        if name == "repository" else slot)
    controller.pass_once()
    assert Operation.objects.filter(kind="backup", state__in=(OpState.PENDING, OpState.RUNNING)).count() == 1
    converge(controller)
    assert Snapshot.objects.filter(reason="scheduled", status=SnapshotStatus.OK).count() == 3
    assert Snapshot.objects.filter(verification=Verification.VERIFIED).count() == 3


def test_a_policy_turned_off_queues_nothing(controller, running_instance, restic, monkeypatch):
    running_instance("eve")
    Instance.objects.update(created_at=timezone.now() - timedelta(days=2))
    backups.set_policy(LOCAL, name="eve", enabled=False)
    monkeypatch.setattr("hafen.backup.schedule.current_slot", lambda expr, name, now: now - timedelta(seconds=1))
    controller.pass_once()
    controller.pass_once()
    assert not Operation.objects.filter(kind="backup").exists()


def test_maintenance_forgets_what_the_policy_no_longer_keeps(controller, demo, restic):
    backups.set_policy(LOCAL, name="eve", keep_daily=1, keep_weekly=0, keep_monthly=0)
    first = _backed_up(controller, restic)
    second = _backed_up(controller, restic)
    Snapshot.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=1))
    Repository.objects.update_or_create(pk=1, defaults={"maintenance_requested": True})
    converge(controller, until=lambda: Repository.objects.get(pk=1).last_check_at is not None)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == SnapshotStatus.FORGOTTEN and second.status == SnapshotStatus.OK
    assert set(restic.forgotten) == {first.restic_id, first.db_snapshot_id}
    state = Repository.objects.get(pk=1)
    assert state.check_ok is True and state.maintenance_run == "" and state.check_subset == 1


# -- several at once -------------------------------------------------------------------------------


def test_operations_queued_during_a_backup_wait_for_it_and_none_is_lost(controller, engine, demo, restic):
    backup = backups.backup(LOCAL, "eve")
    controller.pass_once()  # the backup's job is under way
    clone = backups.clone(LOCAL, "eve", "eve-a")
    stop = services.stop(LOCAL, "eve")
    with pytest.raises(Conflict, match="is to be stopped"):
        backups.backup(LOCAL, "eve")
    converge(controller)
    assert finished(backup).state == OpState.SUCCEEDED, backup.error  # a backup is never superseded
    assert finished(clone).state == OpState.SUCCEEDED, clone.error  # its backup ran before the stop
    assert finished(stop).state == OpState.SUCCEEDED, stop.error
    assert Instance.objects.get(name="eve").state == State.STOPPED
    assert Instance.objects.get(name="eve-a").state == State.RUNNING


def test_two_clones_of_one_instance_at_once(controller, engine, demo, restic):
    first = backups.clone(LOCAL, "eve", "eve-a")
    second = backups.clone(LOCAL, "eve", "eve-b")
    converge(controller)
    assert finished(first).state == OpState.SUCCEEDED, first.error
    assert finished(second).state == OpState.SUCCEEDED, second.error
    assert Snapshot.objects.filter(reason="clone", status=SnapshotStatus.OK).count() == 2
    assert {i.name for i in services.list_instances(LOCAL)} == {"eve", "eve-a", "eve-b"}


def test_two_first_backups_into_a_new_repository_do_not_both_create_it(controller, engine, running_instance,
                                                                       restic):
    """Two jobs that both find no repository would both `restic init` it (and one would then find it damaged):
    while the repository is new, a backup waits for another instance's running one, even in the same pass."""
    from hafen.instances.models import Repository as RepositoryState

    running_instance("aaa")
    running_instance("bbb")
    started = []
    real_apply = engine.apply_service

    def apply(spec, current):
        if spec.name.endswith("_backup"):
            started.append((spec.name, RepositoryState.objects.filter(initialised_at__isnull=False).exists()))
        return real_apply(spec, current)

    engine.apply_service = apply
    ops = [backups.backup(LOCAL, "aaa"), backups.backup(LOCAL, "bbb")]
    converge(controller)
    assert all(finished(op).state == OpState.SUCCEEDED for op in ops)
    assert [known for _, known in started] == [False, True], started
