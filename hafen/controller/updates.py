"""Updating an instance to another version or build of its app, and going back when that fails.

Two plans, chosen when the update is queued (`params["plan"]`):

- rolling: the same app version, a new build of its images (no schema change). A candidate web task
  of the new build starts beside the running web, on the instance's own network only (the edge never
  sends it a request); once its health check passes, a smoke job logs in there and reads the version.
  Only then does the web service roll over start-first (Docker starts each new task beside an old one
  and sends it traffic once its health check passes), and the candidate goes. No page, no backup.
- migrating: another app version (or rebuilt database or cache images). The edge shows the
  "updating" page, the web stops, a backup is taken (the update goes no further if it fails), the
  instance is switched to the new version, its services start in order: the setup job of the new
  version migrates the database, once. The web starts, the smoke job checks it, the edge routes to it.

If a step after the switch fails, the rollback steps run: the web stops, the instance goes back to
its old version and images, the pre-update backup is restored (migrating), the old services start,
and the operation ends "rolled back" with what failed. Each step is idempotent and recorded, so a
controller killed at any point finishes the update or the rollback when it comes back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from hafen.controller import backup_steps as b
from hafen.controller.backup_jobs import BACKUP_IMAGE, JOB_MEMORY, JobFailed
from hafen.engine.base import NetworkRef, ServiceSpec
from hafen.instances import naming
from hafen.instances.models import Instance
from hafen.instances.stack import render

if TYPE_CHECKING:
    from hafen.controller.operations import Context, Step

ROLLING, MIGRATING = "rolling", "migrating"


def _fail(message: str) -> Exception:
    from hafen.controller.operations import Fail

    return Fail(message)


def _pin(ctx: Context, version: str, images: dict[str, str]) -> None:
    """Make the instance run `version` with `images` from now on, and render its services so."""
    from hafen.controller.operations import stack_input

    instance = ctx.instance
    if instance.version != version or instance.images != images:
        instance.version, instance.images = version, dict(images)
        Instance.objects.filter(pk=instance.pk).update(version=version, images=instance.images)
    ctx.specs, ctx.waves = render(stack_input(ctx.settings, ctx.engine, instance, ctx.versions, ctx.running,
                                              job_run=str(ctx.op.pk)))


def switch(ctx: Context) -> bool:
    """The instance runs the new version and images from here on."""
    params = ctx.op.params
    params["switched"] = True
    _pin(ctx, params["to_version"], params["to_images"])
    return True


def switch_back(ctx: Context) -> bool:
    params = ctx.op.params
    _pin(ctx, params["from_version"], params["from_images"])
    return True


def _set(ctx: Context, **fields: Any) -> None:
    instance = ctx.instance
    if any(getattr(instance, key) != value for key, value in fields.items()):
        for key, value in fields.items():
            setattr(instance, key, value)
        Instance.objects.filter(pk=instance.pk).update(**fields)


def updating_page(ctx: Context) -> bool:
    """The edge takes the domain off the web service and shows the updating page."""
    _set(ctx, maintenance=True, notice="updating")
    return True


def web_answers_again(ctx: Context) -> bool:
    """The edge may send traffic to the web service again; until the proxy is attached to it, the page
    it shows is still the updating page."""
    _set(ctx, maintenance=False)
    return True


def notice_off(ctx: Context) -> bool:
    _set(ctx, notice="")
    return True


CANDIDATE = "web-next"  # the logical name (and alias) of a rolling update's candidate web task


def _candidate_spec(ctx: Context) -> ServiceSpec:
    """One web task of the new build, reachable only on the instance's network as `web-next`."""
    from hafen.controller.operations import stack_input

    data = replace(stack_input(ctx.settings, ctx.engine, ctx.instance, ctx.versions, True, job_run=str(ctx.op.pk)),
                   images=ctx.op.params["to_images"])
    web = render(data)[0][ctx.app.web_service]
    prefix, name = ctx.settings.prefix, ctx.instance.name
    return replace(web, name=naming.service(prefix, name, CANDIDATE), labels=naming.labels(prefix, name, CANDIDATE),
                   networks=[NetworkRef(naming.internal_network(prefix, name), aliases=(CANDIDATE,))],
                   replicas=1, force_update=0)


def start_candidate(ctx: Context) -> bool:
    spec = _candidate_spec(ctx)
    return not ctx.engine.apply_service(spec, ctx.services.get(CANDIDATE))


def candidate_ready(ctx: Context) -> bool:
    from hafen.controller.operations import wait_for

    ctx.specs[CANDIDATE] = _candidate_spec(ctx)
    return wait_for([CANDIDATE])(ctx)


def remove_candidate(ctx: Context) -> bool:
    state = ctx.services.get(CANDIDATE)
    if state is not None:
        ctx.engine.remove_service(state.name)
    return state is None


def _smoke_job(ctx: Context) -> ServiceSpec:
    prefix, name, app = ctx.settings.prefix, ctx.instance.name, ctx.app
    host = CANDIDATE if ctx.op.params["plan"] == ROLLING else app.web_service
    base = f"http://{host}:{app.web_port}"
    return ServiceSpec(
        name=naming.backup_service(prefix, name, "smoke"),
        image=ctx.engine.image_ref(BACKUP_IMAGE),
        labels=b.job_labels(ctx, "smoke"),
        command=["hafen-backup", "smoke"],
        env={"HAFEN_LOGIN_URL": base + app.login_path, "HAFEN_ADMIN_USER": app.admin_username,
             "HAFEN_VERSION_URL": base + (app.version_path or app.health_path),
             "HAFEN_VERSION_FIELD": app.version_field},
        secrets=[b.instance_secret(ctx, app.admin_password_secret, "admin_password")],
        networks=[NetworkRef(naming.internal_network(prefix, name))],
        constraints=ctx.pinned,
        job=True,
        memory_bytes=JOB_MEMORY,
    )


def _same_version(found: str, expected: str) -> bool:
    return found == expected or found.startswith(expected + ".")


def smoke(ctx: Context) -> bool:
    """The new version answers inside the instance: the admin logs in, and it says it runs the new version."""
    expected = ctx.op.params["to_version"]
    try:
        result = b.run_job(ctx, "smoke", _smoke_job(ctx))
    except JobFailed as exc:
        raise _fail(f"the smoke check failed: {exc}") from exc
    if result is None:
        return False
    problems = []
    login = result.get("login") or {}
    if not login.get("ok"):
        problems.append(f"the admin cannot log in ({login.get('error') or login.get('status')})")
    version = result.get("version") or {}
    if ctx.app.version_path and not _same_version(str(version.get("found", "")), expected):
        problems.append(f"the app says it runs {version.get('found') or '?'}, not {expected}"
                        + (f" ({version['error']})" if version.get("error") else ""))
    if problems:
        raise _fail("the smoke check failed: " + "; ".join(problems))
    return True


def _restoring(ctx: Context, key: str) -> None:
    """Make `params[key]` the snapshot b.restore restores; another snapshot than before is another job run."""
    params = ctx.op.params
    if params.get("restore") != params[key]:
        params["restore"] = params[key]
        params["restore_run"] = params.get("restore_run", 0) + 1


def restore_older(ctx: Context) -> bool:
    """A downgrade: the older version gets the data of a backup taken on it (it cannot read newer data)."""
    if not ctx.op.params.get("older"):
        return True
    _restoring(ctx, "older")
    return b.restore(ctx)


def restore_if_switched(ctx: Context) -> bool:
    """Put the pre-update backup back: the new version's migration may have changed the data."""
    if not ctx.op.params.get("switched"):
        return True
    _restoring(ctx, "backup")
    return b.restore(ctx)


def settle(ctx: Context) -> bool:
    """After a failure, the rollback got this far: the instance runs its old version again."""
    if ctx.op.params.get("failure"):
        ctx.op.params["rolled_back"] = True
    return True


def _bring_up(ctx: Context, waves: list[list[str]], prefix: str = "", rollback: bool = False) -> list[Step]:
    from hafen.controller.operations import Step, deploy, wait_for

    steps = []
    setup = {svc for svc, spec in ctx.specs.items() if spec.job}
    for wave in waves:
        label = ", ".join(wave)
        migrates = set(wave) <= setup and not rollback
        title = f"migrate the database ({label} of the new version)" if migrates else f"start {label}"
        steps += [Step(f"{prefix}deploy:{label}", title, deploy(wave), always=rollback, rollback=rollback),
                  Step(f"{prefix}wait:{label}", f"wait for {label}", wait_for(wave), always=rollback,
                       rollback=rollback)]
    return steps


def plan(ctx: Context) -> list[Step]:
    from hafen.controller.operations import Step, deploy, route, verify, wait_for

    params = ctx.op.params
    web = ctx.app.web_service
    to, back = params["to_version"], params["from_version"]
    if params["plan"] == ROLLING:
        return [
            Step("candidate", f"start a {web} task of the new build of {to}, out of traffic", start_candidate),
            Step("wait:candidate", "wait for it to be healthy", candidate_ready),
            Step("smoke", "check the login and the version on it", smoke),
            Step("smoke-cleanup", "remove the smoke job", b.remove_job("smoke"), always=True),
            Step("switch", f"pin the new build of {to}", switch),
            Step(f"deploy:{web}", f"roll {web} over to the new build", deploy([web])),
            Step(f"wait:{web}", f"wait for the new {web}", wait_for([web])),
            Step("candidate-remove", "remove the candidate task", remove_candidate, always=True),
            Step("rollback:switch", f"go back to the old build of {back}", switch_back, always=True, rollback=True),
            Step(f"rollback:deploy:{web}", f"start the old {web}", deploy([web]), always=True, rollback=True),
            Step(f"rollback:wait:{web}", f"wait for the old {web}", wait_for([web]), always=True, rollback=True),
            Step("route", "route the domain at the edge", route, always=True),
            Step("settle", "record the outcome", settle, always=True),
        ]
    first, rest = ctx.waves[0], ctx.waves[1:]
    caches = [svc for svc in ctx.app.backup.caches if svc in ctx.specs]
    return [
        Step("updating-on", "show the updating page at the edge", updating_page),
        Step("route", "take the domain off the web service", route),
        Step("stop-web", f"stop {web}", b.stop_web),
        Step("backup", f"back up {back} before the update", b.back_up("backup")),
        Step("backup-cleanup", "remove the backup job", b.remove_job("backup"), always=True),
        Step("switch", f"switch to {to}", switch),
        *_bring_up(ctx, [first]),
        *([Step("restore-older", f"restore the backup taken on {to}", restore_older),
           Step("restore-older-cleanup", "remove the restore job", b.remove_job("restore")),
           Step("caches-remove", "empty the caches of the replaced data", b.remove_caches),
           Step("deploy:caches", "start the caches", deploy(caches)),
           Step("wait:caches", "wait for the caches", wait_for(caches))] if params.get("older") else []),
        *_bring_up(ctx, rest),
        Step("smoke", "check the login and the version", smoke),
        Step("smoke-cleanup", "remove the smoke job", b.remove_job("smoke"), always=True),
        Step("rollback:stop-web", f"stop {web}", b.stop_web, always=True, rollback=True),
        Step("rollback:switch", f"go back to {back}", switch_back, always=True, rollback=True),
        *_bring_up(ctx, [first], "rollback:", rollback=True),
        Step("rollback:restore", "restore the backup taken before the update", restore_if_switched,
             always=True, rollback=True),
        Step("rollback:restore-cleanup", "remove the restore job", b.remove_job("restore"), always=True,
             rollback=True),
        *([Step("rollback:caches-remove", "empty the caches of the replaced data", _remove_caches_if_switched,
                always=True, rollback=True),
           Step("rollback:deploy:caches", "start the caches", deploy(caches), always=True, rollback=True),
           Step("rollback:wait:caches", "wait for the caches", wait_for(caches), always=True, rollback=True)]
          if caches else []),
        *_bring_up(ctx, rest, "rollback:", rollback=True),
        Step("updating-off", "route the domain to the web service again", web_answers_again, always=True),
        Step("route-back", "route the domain at the edge", route, always=True),
        Step("verify", "check the app through the edge", verify, always=True),
        Step("notice-off", "end the updating page", notice_off, always=True),
        Step("settle", "record the outcome", settle, always=True),
    ]


def _remove_caches_if_switched(ctx: Context) -> bool:
    return not ctx.op.params.get("switched") or b.remove_caches(ctx)
