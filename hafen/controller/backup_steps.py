"""The steps of backups, restores and verifications (see operations.py for how steps run).

- backup: one job dumps the database and copies the volumes into the repository, with a
  manifest and fingerprint; the snapshot then gets a verification queued.
- restore (in place): a safety backup of the current state, the web stopped behind the edge's
  "starting" page, the data replaced, the setup job run, the web started. If the restore itself
  fails, the safety backup is restored instead (a rollback), and the operation says so.
- create with `params["restore"]` (restore into a new instance, clone): the database's wave
  starts, the data is restored, then the rest starts as in any create.
- verify: a create of a sandbox instance (no edge, internal network only) with the data
  restored, then a check job (fingerprint of the data, the admin's login), then the sandbox
  goes, all of it, whatever happened before.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

import hafen
from hafen import crypto
from hafen.access import audit
from hafen.access.models import Result
from hafen.access.policy import Actor
from hafen.backup.fingerprint import compare
from hafen.controller.backup_jobs import (
    BACKUP_IMAGE,
    JOB_MEMORY,
    LABEL_RUN,
    JobFailed,
    Repository,
    backup_spec,
    outcome,
)
from hafen.engine.base import (
    LABEL_INSTANCE,
    LABEL_SERVICE,
    LABEL_SPEC,
    NetworkRef,
    SecretRef,
    ServiceSpec,
    ServiceState,
)
from hafen.errors import EngineConflict
from hafen.instances import naming
from hafen.instances.models import Operation, SecretStatus, Snapshot, SnapshotStatus, Verification
from hafen.instances.models import Repository as RepositoryState

if TYPE_CHECKING:
    from hafen.controller.operations import Context, StepFn

BACKUP_KINDS = frozenset({"backup", "verify"})  # operations that never change the instance's state


def _fail(message: str) -> Exception:
    from hafen.controller.operations import Fail

    return Fail(message)


def _snapshot(ctx: Context, key: str) -> Snapshot:
    pk = ctx.op.params.get(key)
    snapshot = Snapshot.objects.filter(pk=pk).first() if pk else None
    if snapshot is None:
        raise _fail(f"the snapshot to {'restore' if key == 'restore' else 'write'} is gone")
    return snapshot


def _run(ctx: Context, job: str) -> str:
    """The run id of a job of this operation (bumped for a second run, e.g. a rollback)."""
    return f"{ctx.op.pk}.{ctx.op.params.get(f'{job}_run', 0)}"


def job_labels(ctx: Context, job: str) -> dict[str, str]:
    return {**naming.labels(ctx.settings.prefix, ctx.instance.name, job), LABEL_RUN: _run(ctx, job)}


def _repository(ctx: Context) -> Repository:
    repo = Repository(ctx.settings)
    repo.ensure(ctx.engine, ctx.obs)
    return repo


def _held_by_maintenance(ctx: Context, job: str) -> bool:
    """Whether a job that has not started yet must wait: the repository's maintenance (prune) runs."""
    if job in ctx.services or not RepositoryState.objects.filter(pk=1).exclude(maintenance_run="").exists():
        return False
    ctx.op.error = "waiting for the repository's maintenance to finish"
    return True


def _held_by_first_backup(ctx: Context) -> bool:
    """Whether a backup that has not started yet must wait: the repository may not exist yet and another
    instance's backup runs, which may be creating it. Two jobs that both find no repository would each
    make one (restic init writes the key and the config; on a REST server the second overwrites the
    first's config), and one of them would then find the repository "damaged"."""
    if "backup" in ctx.services or RepositoryState.objects.filter(pk=1, initialised_at__isnull=False).exists():
        return False
    others = [s for s in ctx.obs.services.values() if s.labels.get(LABEL_SERVICE) == "backup"
              and s.labels.get(LABEL_INSTANCE) != ctx.instance.name and not s.complete]
    if not others:
        return False
    ctx.op.error = "waiting for the first backup into the new repository to finish"
    return True


def instance_secret(ctx: Context, name: str, target: str | None = None) -> SecretRef:
    version = ctx.versions[name]
    return SecretRef(naming.secret(ctx.settings.prefix, ctx.instance.name, name, version), target or name)


def _database_env(ctx: Context) -> dict[str, str]:
    return {"HAFEN_BACKUP_SPEC": json.dumps(backup_spec(ctx.app))}


def _progress(ctx: Context, text: str) -> None:
    step = ctx.op.current_step()
    if step is not None and text:
        step["detail"] = text


def run_job(ctx: Context, job: str, spec: ServiceSpec) -> dict[str, Any] | None:
    """Start the job if it is not there (or is another run), and return its result once it has one."""
    state = ctx.services.get(job)
    if state is None or state.spec_digest != spec.digest():
        ctx.engine.apply_service(spec, state)
        # what this pass started counts as observed for the operations after this one in the pass
        ctx.obs.services[spec.name] = ServiceState(spec.name, {**spec.labels, LABEL_SPEC: spec.digest()}, 1, True)
        return None
    result = outcome(ctx.engine, state, spec)
    if not result.done:
        _progress(ctx, result.progress)
        return None
    return result.result


# -- backup ----------------------------------------------------------------------------------------


def _bundle(ctx: Context) -> SecretRef:
    """The instance's current secrets, encrypted with hafen's key, for the snapshot (a Docker secret
    per operation: an encryption is never the same twice, so it is made once)."""
    prefix, name = ctx.settings.prefix, ctx.instance.name
    docker_name = f"{naming.stack(prefix, name)}_bundle_{ctx.op.pk}"
    if docker_name not in ctx.obs.secrets:
        values = {s.name: crypto.decrypt(s.ciphertext) for s in ctx.instance.secrets.all()
                  if s.status == SecretStatus.ACTIVE and s.version == ctx.versions.get(s.name)}
        with contextlib.suppress(EngineConflict):  # made by a pass that died before it was observed
            ctx.engine.create_secret(docker_name, crypto.encrypt(json.dumps(values)).encode(), ctx.labels())
    return SecretRef(docker_name, "instance_secrets")


def _backup_job(ctx: Context, snapshot: Snapshot) -> ServiceSpec:
    prefix, name, app = ctx.settings.prefix, ctx.instance.name, ctx.app
    manifest = {
        "instance": name, "app": ctx.instance.app, "version": ctx.instance.version, "domain": ctx.instance.domain,
        "size": ctx.instance.size,
        "organisation": ctx.instance.organisation.slug if ctx.instance.organisation else None,
        "reason": snapshot.reason, "hafen_version": hafen.__version__, "snapshot": snapshot.pk,
    }
    return _repository(ctx).spec(
        naming.backup_service(prefix, name, "backup"), job_labels(ctx, "backup"), ["hafen-backup", "backup"],
        env={"HAFEN_INSTANCE": name, "HAFEN_BACKUP_ID": f"{prefix}-{snapshot.pk}",
             "HAFEN_MANIFEST": json.dumps(manifest), **_database_env(ctx)},
        secrets=[instance_secret(ctx, app.backup.password_secret, "db_password"), _bundle(ctx)],
        mounts=[ctx.volume_mount(v, f"/volumes/{v}", read_only=True) for v in app.backup_volumes],
        networks=[NetworkRef(naming.internal_network(prefix, name))],
        constraints=ctx.pinned,
    )


def back_up(key: str) -> StepFn:
    """Back up into the snapshot `params[key]` names (the one asked for, or the safety backup)."""

    def run(ctx: Context) -> bool:
        snapshot = _snapshot(ctx, key)
        if snapshot.status == SnapshotStatus.OK:
            return True
        if snapshot.status == SnapshotStatus.FAILED:
            raise _fail(f"backup failed: {snapshot.error}")
        if _held_by_maintenance(ctx, "backup") or _held_by_first_backup(ctx):
            return False
        try:
            result = run_job(ctx, "backup", _backup_job(ctx, snapshot))
        except JobFailed as exc:
            Snapshot.objects.filter(pk=snapshot.pk).update(status=SnapshotStatus.FAILED, error=str(exc),
                                                          finished_at=timezone.now())
            raise _fail(f"backup failed: {exc}") from exc
        if result is None:
            if snapshot.status == SnapshotStatus.PENDING:
                Snapshot.objects.filter(pk=snapshot.pk).update(status=SnapshotStatus.RUNNING)
            return False
        _record_backup(snapshot, result)
        return True

    return run


def _record_backup(snapshot: Snapshot, result: dict[str, Any]) -> None:
    snapshot.restic_id = str(result["files_snapshot"])
    snapshot.db_snapshot_id = str(result["db_snapshot"])
    snapshot.total_bytes = int(result.get("total_bytes") or 0)
    snapshot.added_bytes = int(result.get("added_bytes") or 0)
    snapshot.manifest = result.get("manifest") or {}
    snapshot.status = SnapshotStatus.OK
    snapshot.error = ""
    snapshot.finished_at = timezone.now()
    snapshot.save()
    RepositoryState.objects.update_or_create(pk=1, defaults={"error": ""})
    RepositoryState.objects.filter(pk=1, initialised_at__isnull=True).update(initialised_at=timezone.now())


def remove_job(*jobs: str) -> StepFn:
    """Remove finished jobs of the operation and the secrets they alone used."""

    def run(ctx: Context) -> bool:
        for job in jobs:
            state = ctx.services.get(job)
            if state is not None:
                ctx.engine.remove_service(state.name)
        bundle = f"{naming.stack(ctx.settings.prefix, ctx.instance.name)}_bundle_"
        for secret in sorted(s for s in ctx.obs.secrets if s.startswith(bundle)):
            try:
                ctx.engine.remove_secret(secret)
            except EngineConflict:
                return False  # its job's service is still going
        return True

    return run


def queue_verify(ctx: Context) -> bool:
    """A verification of the new snapshot, in its own sandbox (not for a safety backup: a restore follows)."""
    from hafen.instances.backups import queue_verification

    snapshot = _snapshot(ctx, "snapshot")
    if snapshot.verification == Verification.UNVERIFIED:
        queue_verification(snapshot)
    return True


# -- restore ---------------------------------------------------------------------------------------


def _restore_job(ctx: Context, snapshot: Snapshot) -> ServiceSpec:
    prefix, name, app = ctx.settings.prefix, ctx.instance.name, ctx.app
    volumes = [v for v in app.backup_volumes if v in snapshot.manifest.get("volumes", app.backup_volumes)]
    return _repository(ctx).spec(
        naming.backup_service(prefix, name, "restore"), job_labels(ctx, "restore"), ["hafen-backup", "restore"],
        env={"HAFEN_SNAPSHOT": snapshot.restic_id, "HAFEN_VOLUMES": json.dumps(volumes), **_database_env(ctx)},
        secrets=[instance_secret(ctx, app.backup.password_secret, "db_password")],
        mounts=[ctx.volume_mount(v, f"/volumes/{v}") for v in volumes],
        networks=[NetworkRef(naming.internal_network(prefix, name))],
        constraints=ctx.pinned,
    )


def _differences(snapshot: Snapshot, fingerprint: dict[str, Any]) -> list[str]:
    expected = snapshot.manifest.get("fingerprint")
    if not isinstance(expected, dict):
        return ["the snapshot has no fingerprint to check against"]
    return compare(expected, fingerprint)


def restore(ctx: Context) -> bool:
    """Replace the instance's data with the snapshot `params["restore"]` names; for a restore in
    place that fails, roll back to the safety backup."""
    params = ctx.op.params
    snapshot = _snapshot(ctx, "restore")
    if snapshot.status in (SnapshotStatus.PENDING, SnapshotStatus.RUNNING):
        ctx.op.error = f"waiting for the backup of {snapshot.instance_name} to finish"
        return False
    if snapshot.status != SnapshotStatus.OK:
        raise _fail(f"the backup {snapshot.short_id or snapshot.pk} of {snapshot.instance_name} "
                    f"cannot be restored: {snapshot.error or snapshot.status}")
    if _held_by_maintenance(ctx, "restore"):
        return False
    try:
        result = run_job(ctx, "restore", _restore_job(ctx, snapshot))
        if result is None:
            return False
        differences = _differences(snapshot, result.get("fingerprint") or {})
        if differences:
            raise JobFailed("the restored data differs from the backup: " + "; ".join(differences))
    except JobFailed as exc:
        safety = params.get("safety")
        if ctx.op.kind != "restore" or not safety or params.get("rolled_back"):
            raise _fail(f"restore failed: {exc}") from exc
        params["rolled_back"] = str(exc)
        params["restore"] = safety
        params["restore_run"] = params.get("restore_run", 0) + 1
        ctx.op.error = f"restore failed ({exc}); rolling back to the safety backup"
        return False
    return True


def maintenance(on: bool) -> StepFn:
    def run(ctx: Context) -> bool:
        if ctx.instance.maintenance != on:
            ctx.instance.maintenance = on
            ctx.instance.save(update_fields=["maintenance", "updated_at"])
        if on:
            ctx.op.params["touched"] = True
        return True

    return run


def remove_caches(ctx: Context) -> bool:
    """Remove the app's cache services, so that they start again empty on the restored data."""
    present = [state for svc, state in ctx.services.items() if svc in ctx.app.backup.caches]
    for state in present:
        ctx.engine.remove_service(state.name)
    return not present


def stop_web(ctx: Context) -> bool:
    """Scale the web service to zero (its spec for the rest of the operation says otherwise)."""
    web = ctx.app.web_service
    state = ctx.services.get(web)
    if state is None:
        return True
    spec = replace(ctx.specs[web], replicas=0)
    if ctx.engine.apply_service(spec, state):
        return False
    return state.spec_digest == spec.digest() and state.running == 0 and state.stale == 0


# -- verify ----------------------------------------------------------------------------------------


def _check_job(ctx: Context) -> ServiceSpec:
    prefix, name, app = ctx.settings.prefix, ctx.instance.name, ctx.app
    return _repository(ctx).spec(
        naming.backup_service(prefix, name, "check"), job_labels(ctx, "check"), ["hafen-backup", "check-instance"],
        env={"HAFEN_LOGIN_URL": f"http://{app.web_service}:{app.web_port}{app.login_path}",
             "HAFEN_ADMIN_USER": app.admin_username, **_database_env(ctx)},
        secrets=[instance_secret(ctx, app.backup.password_secret, "db_password"),
                 instance_secret(ctx, app.admin_password_secret, "admin_password")],
        mounts=[ctx.volume_mount(v, f"/volumes/{v}", read_only=True) for v in app.backup_volumes],
        networks=[NetworkRef(naming.internal_network(prefix, name))],
        constraints=ctx.pinned,
    )


def check(ctx: Context) -> bool:
    """The restored sandbox: its data has the snapshot's fingerprint, and its admin can log in."""
    snapshot = _snapshot(ctx, "restore")
    try:
        result = run_job(ctx, "check", _check_job(ctx))
    except JobFailed as exc:
        raise _fail(f"check of the restored instance failed: {exc}") from exc
    if result is None:
        return False
    problems = [f"fingerprint: {d}" for d in _differences(snapshot, result.get("fingerprint") or {})]
    login = result.get("login") or {}
    if not login.get("ok"):
        problems.append(f"login: the admin cannot log in ({login.get('error') or login.get('status')})")
    if problems:
        raise _fail("; ".join(problems))
    return True


CONTROLLER = Actor(via="system", source="", local_name="controller")


def audit_failure(op: Operation, error: str) -> None:
    """A failed backup or verification is written to the audit log, under the instance backed up."""
    snapshot = Snapshot.objects.filter(pk=op.params.get("snapshot") or op.params.get("restore")).first()
    name = snapshot.instance_name if snapshot else op.instance_name
    audit.record(CONTROLLER, op.kind, Result.FAILED, instance_name=name, organisation_id=op.organisation_id,
                 message=error, detail={"snapshot": snapshot.short_id if snapshot else None},
                 operation_id=op.pk)


def finish_verification(op_error: str, snapshot_pk: int | None) -> None:
    """Record a verification's outcome on its snapshot."""
    if snapshot_pk is None:
        return
    with transaction.atomic():
        Snapshot.objects.filter(pk=snapshot_pk).update(
            verification=Verification.FAILED if op_error else Verification.VERIFIED,
            verification_error=op_error, verified_at=timezone.now(),
        )


# -- erase on another node -------------------------------------------------------------------------


def _wipe_job(ctx: Context, node: str) -> ServiceSpec:
    volumes = list(ctx.app.volumes)
    prefix, name = ctx.settings.prefix, ctx.instance.name
    return ServiceSpec(
        name=naming.backup_service(prefix, name, "wipe"),
        image=ctx.engine.image_ref(BACKUP_IMAGE),
        labels=job_labels(ctx, "wipe"),
        command=["hafen-backup", "wipe", *volumes],
        mounts=[naming.volume_mount(prefix, name, v, f"/volumes/{v}", node) for v in volumes],
        constraints=naming.pinned_to(node),
        job=True,
        memory_bytes=JOB_MEMORY,
    )


def run_wipe(ctx: Context, node: str) -> dict[str, Any] | None:
    """Run the job that empties the instance's volumes on `node`; its result once it is done."""
    return run_job(ctx, "wipe", _wipe_job(ctx, node))


def wipe(ctx: Context) -> bool:
    """Empty the instance's volumes on the node that holds them, which the controller's engine cannot
    remove there (only its own node's); the empty volumes stay on that node."""
    try:
        return run_wipe(ctx, ctx.instance.node_id) is not None
    except JobFailed as exc:
        raise _fail(f"could not empty the volumes of {ctx.instance.name} on {ctx.instance.node_name}: {exc}") from exc
