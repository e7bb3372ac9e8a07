"""REST API v1: thin views over the service layer; the same permission checks as the UI and CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Query, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError

from hafen.access import audit
from hafen.access import services as access
from hafen.access.models import Membership, Organisation
from hafen.access.policy import Actor
from hafen.api import schemas as s
from hafen.api.auth import BearerToken, Session
from hafen.catalog import get_app
from hafen.errors import HafenError, InvalidInput
from hafen.instances import backups, calendar, elastic, mail, nodes, organisations, rollouts, services, updates

api = NinjaAPI(
    title="hafen",
    version="1",
    description="Run many isolated instances of a web app. Authenticate with `Authorization: Bearer <token>`.",
    urls_namespace="api-v1",
    auth=[BearerToken(), Session()],
)

ERRORS: dict[int, type[Schema]] = {code: s.ErrorOut for code in (400, 401, 403, 404, 409)}
ENGINE_DOWN: dict[int, type[Schema]] = {503: s.ErrorOut}  # where a view waits on the Docker engine


def _error(request: HttpRequest, status: int, code: str, message: str) -> HttpResponse:
    return api.create_response(request, {"error": {"code": code, "message": message}}, status=status)


@api.exception_handler(HafenError)
def _hafen_error(request: HttpRequest, exc: HafenError) -> HttpResponse:
    response = _error(request, exc.http_status, exc.code, str(exc))
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "payload"))
    return _error(request, 400, "invalid", f"{where}: {first.get('msg', 'invalid input')}".strip(": "))


@api.exception_handler(AuthenticationError)
def _authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(request, 401, "unauthenticated", "send `Authorization: Bearer <token>` with a valid token")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error(request, exc.status_code, "error", str(exc))


def _actor(request: HttpRequest) -> Actor:
    actor: Actor = request.auth  # type: ignore[attr-defined]
    return actor


def _page(items: QuerySet[Any], page: int, per_page: int) -> tuple[int, list[Any]]:
    paginator = Paginator(items, per_page)
    return paginator.count, list(paginator.get_page(page).object_list)


class PageQuery(Schema):
    page: int = 1
    per_page: int = 50

    def clean(self) -> tuple[int, int]:
        if self.page < 1 or not 1 <= self.per_page <= 500:
            raise InvalidInput("page starts at 1; per_page is between 1 and 500")
        return self.page, self.per_page


# -- instances -------------------------------------------------------------------------------------------


class InstanceFilter(PageQuery):
    q: str = ""
    state: str = ""
    app: str = ""
    organisation: str = ""


class InstancePage(Schema):
    count: int
    items: list[s.InstanceOut]


@api.get("/instances", response={200: InstancePage, **ERRORS}, tags=["instances"])
def list_instances(request: HttpRequest, filters: Query[InstanceFilter]) -> dict[str, Any]:
    """Instances the caller may see; `q` searches names and domains."""
    page, per_page = filters.clean()
    found = services.list_instances(_actor(request), q=filters.q, state=filters.state, app=filters.app,
                                    organisation=filters.organisation)
    count, items = _page(found, page, per_page)
    return {"count": count, "items": backups.describe_all(items)}


@api.post("/instances", response={202: s.OperationOut, **ERRORS, **ENGINE_DOWN}, tags=["instances"])
def create_instance(request: HttpRequest, body: s.CreateIn) -> Status[dict[str, Any]]:
    """Create an instance; follow the returned operation until it has succeeded."""
    op = services.create_instance(_actor(request), body.name, body.app, version=body.version, domain=body.domain,
                                  size=body.size, organisation=body.organisation)
    return Status(202, services.describe_operation(op))


@api.get("/instances/{name}", response={200: s.InstanceDetailOut, **ERRORS}, tags=["instances"])
def get_instance(request: HttpRequest, name: str) -> dict[str, Any]:
    actor = _actor(request)
    return services.detail(actor, services.get_instance(actor, name))


@api.get("/instances/{name}/policy", response={200: s.ElasticPolicyOfOut, **ERRORS}, tags=["instances"])
def get_policy(request: HttpRequest, name: str) -> dict[str, Any]:
    """The instance's elastic-capacity policy as it applies, with where each value comes from, and the
    controller's latest decisions from it."""
    return elastic.show_policy(_actor(request), name)


@api.patch("/instances/{name}/policy", response={200: s.ElasticPolicyOfOut, **ERRORS}, tags=["instances"])
def set_policy(request: HttpRequest, name: str, body: s.ElasticPolicyIn) -> dict[str, Any]:
    """Set the instance's own values (a duration or never), or take them away (default). Admins of its
    organisation and operators."""
    return elastic.set_policy(_actor(request), name, **body.dict())


@api.get("/events", response={200: list[s.EventOut], **ERRORS}, tags=["events"])
def list_events(request: HttpRequest) -> list[dict[str, Any]]:
    """The events not over yet of every instance the caller may see, soonest first."""
    return [calendar.describe(e) for e in calendar.coming(_actor(request))]


@api.get("/instances/{name}/events", response={200: list[s.EventOut], **ERRORS}, tags=["events"])
def instance_events(request: HttpRequest, name: str) -> list[dict[str, Any]]:
    return [calendar.describe(e) for e in calendar.coming(_actor(request), name)]


@api.post("/instances/{name}/events", response={201: s.EventOut, **ERRORS}, tags=["events"])
def add_event(request: HttpRequest, name: str, body: s.EventIn) -> Status[dict[str, Any]]:
    """Plan an event: from HAFEN_EVENT_LEAD (default 30 minutes) before its start to its end the instance is
    awake, never sleeps, and runs the web replicas its participants need. Admins of its organisation and
    operators."""
    event = calendar.add(_actor(request), name, start=body.start_at, end=body.end_at,
                         participants=body.participants, title=body.title)
    return Status(201, calendar.describe(event))


@api.delete("/instances/{name}/events/{event_id}", response={204: None, **ERRORS}, tags=["events"])
def remove_event(request: HttpRequest, name: str, event_id: int) -> Status[None]:
    calendar.remove(_actor(request), name, event_id)
    return Status(204, None)


@api.get("/capacity", response={200: dict[str, Any], **ERRORS}, tags=["events"])
def capacity(request: HttpRequest) -> dict[str, Any]:
    """Operators: per hour of the next 14 days, the memory and CPU the instances reserve with the planned
    events at their replicas, against the swarm's schedulable nodes; the hours over capacity."""
    return calendar.forecast(_actor(request))


def _simple(action: str, summary: str) -> None:
    def view(request: HttpRequest, name: str) -> Status[dict[str, Any]]:
        operation = getattr(services, action)(_actor(request), name)
        return Status(202, services.describe_operation(operation))

    view.__name__ = f"{action}_instance"
    api.post(f"/instances/{{name}}/{action}", response={202: s.OperationOut, **ERRORS}, tags=["instances"],
             summary=summary, operation_id=f"{action}_instance")(view)


_simple("start", "Start an instance (also brings back a deleted one)")
_simple("stop", "Stop an instance; its data stays")
_simple("restart", "Restart the web service, one replica at a time")
_simple("delete", "Remove the services but keep the data")


@api.post("/instances/{name}/erase", response={202: s.OperationOut, **ERRORS}, tags=["instances"])
def erase_instance(request: HttpRequest, name: str, body: s.EraseIn) -> Status[dict[str, Any]]:
    """Remove an instance with all its data; `confirm` must repeat the name."""
    if body.confirm != name:
        raise InvalidInput(f"to erase {name}, send its name as `confirm`")
    return Status(202, services.describe_operation(services.erase(_actor(request), name)))


@api.post("/instances/{name}/scale", response={202: s.OperationOut, **ERRORS}, tags=["instances"])
def scale_instance(request: HttpRequest, name: str, body: s.ScaleIn) -> Status[dict[str, Any]]:
    return Status(202, services.describe_operation(services.scale(_actor(request), name, body.replicas)))


@api.post("/instances/{name}/password", response={202: s.PasswordOut, **ERRORS}, tags=["instances"])
def new_admin_password(request: HttpRequest, name: str) -> Status[dict[str, Any]]:
    """Set a new generated admin password; it is in this response only."""
    actor = _actor(request)
    op, password = services.new_admin_password(actor, name)
    app = get_app(services.get_instance(actor, name).app)
    return Status(202, {"operation": services.describe_operation(op), "username": app.admin_username,
                        "password": password})


@api.get("/instances/{name}/credentials", response={200: s.CredentialsOut, **ERRORS}, tags=["instances"])
def credentials(request: HttpRequest, name: str) -> dict[str, str]:
    """The admin credentials; each reveal is written to the audit log."""
    creds = services.credentials(_actor(request), name)
    return {"username": creds.username, "password": creds.password}


@api.get("/instances/{name}/operations", response={200: list[s.OperationOut], **ERRORS}, tags=["instances"])
def instance_operations(request: HttpRequest, name: str, limit: int = 20) -> list[dict[str, Any]]:
    if not 1 <= limit <= 200:
        raise InvalidInput("limit is between 1 and 200")
    return [services.describe_operation(o) for o in services.operations(_actor(request), name, limit)]


class LogQuery(Schema):
    service: str | None = None
    tail: int = 100
    since: int | None = None


@api.get("/instances/{name}/logs", response={200: s.LogsOut, **ERRORS, **ENGINE_DOWN}, tags=["instances"])
def logs(request: HttpRequest, name: str, query: Query[LogQuery]) -> dict[str, Any]:
    """The last lines of a service's log (default: the web service)."""
    if not 1 <= query.tail <= 5000:
        raise InvalidInput("tail is between 1 and 5000")
    if query.since is not None and not 0 <= query.since <= 2**40:
        raise InvalidInput("since is a Unix time")
    actor = _actor(request)
    lines = list(services.logs(actor, name, query.service, since=query.since, tail=query.tail))
    service = query.service or get_app(services.get_instance(actor, name).app).web_service
    return {"service": service, "lines": lines}


@api.get("/instances/{name}/locks", response={200: list[s.LockOut], **ERRORS}, tags=["locks"])
def list_locks(request: HttpRequest, name: str) -> list[dict[str, Any]]:
    return [services.describe_lock(lock) for lock in services.locks(_actor(request), name)]


@api.post("/instances/{name}/locks", response={201: s.LockOut, **ERRORS}, tags=["locks"])
def add_lock(request: HttpRequest, name: str, body: s.LockIn) -> Status[dict[str, Any]]:
    """Refuse the chosen actions (erase, delete, update, stop, scale) until the lock is lifted."""
    return Status(201, services.describe_lock(services.lock(_actor(request), name, body.actions, body.reason)))


@api.delete("/instances/{name}/locks/{lock_id}", response={204: None, **ERRORS}, tags=["locks"])
def remove_lock(request: HttpRequest, name: str, lock_id: int) -> Status[None]:
    services.unlock(_actor(request), name, lock_id)
    return Status(204, None)


@api.get("/operations/{operation_id}", response={200: s.OperationOut, **ERRORS}, tags=["instances"])
def get_operation(request: HttpRequest, operation_id: int) -> dict[str, Any]:
    return services.describe_operation(services.get_operation(_actor(request), operation_id))


# -- backups ---------------------------------------------------------------------------------------------

ACTING = {**ERRORS, **ENGINE_DOWN}  # an action needs the controller running (503 when it is not)


@api.post("/instances/{name}/backups", response={202: s.OperationOut, **ACTING}, tags=["backups"])
def backup_instance(request: HttpRequest, name: str) -> Status[dict[str, Any]]:
    """Back up an instance now; follow the operation. Its verification is queued when it has been written."""
    return Status(202, services.describe_operation(backups.backup(_actor(request), name)))


@api.get("/instances/{name}/backups", response={200: s.BackupsOut, **ERRORS}, tags=["backups"],
         exclude_unset=True)
def list_backups(request: HttpRequest, name: str) -> dict[str, Any]:
    """The backups of an instance, newest first (also of an erased one), with its policy and where backups go."""
    return backups.listing(_actor(request), name)


@api.post("/instances/{name}/restore", response={202: s.OperationOut, **ACTING}, tags=["backups"])
def restore_instance(request: HttpRequest, name: str, body: s.RestoreIn) -> Status[dict[str, Any]]:
    """Restore a backup: into a new instance (`into`, with new secrets), or in place (`confirm` repeats the
    name; a safety backup is taken first). Returns the restore, or the new instance's create."""
    actor = _actor(request)
    if body.into:
        op = backups.restore_into(actor, name, body.snapshot, body.into, domain=body.domain,
                                  organisation=body.organisation)
    else:
        if body.domain or body.organisation:
            raise InvalidInput("`domain` and `organisation` go with `into`")
        op = backups.restore(actor, name, body.snapshot, confirm=body.confirm or "")
    return Status(202, services.describe_operation(op))


@api.post("/instances/{name}/update", response={202: s.OperationOut, **ACTING}, tags=["instances"])
def update_instance(request: HttpRequest, name: str, body: s.UpdateIn) -> Status[dict[str, Any]]:
    """Update to another version of the app (a backup first, the migration once, back on failure) or to a
    newer build of the same version (a rolling update). Returns the update."""
    return Status(202, services.describe_operation(updates.update(_actor(request), name, body.version, body.restore)))


@api.post("/instances/{name}/clone", response={202: s.OperationOut, **ACTING}, tags=["backups"])
def clone_instance(request: HttpRequest, name: str, body: s.CloneIn) -> Status[dict[str, Any]]:
    """Back up an instance now and restore that backup into a new one; returns the new instance's create."""
    op = backups.clone(_actor(request), name, body.name, domain=body.domain, organisation=body.organisation)
    return Status(202, services.describe_operation(op))


@api.post("/instances/{name}/backups/{snapshot}/verify", response={202: s.OperationOut, **ACTING},
          tags=["backups"])
def verify_backup(request: HttpRequest, name: str, snapshot: str) -> Status[dict[str, Any]]:
    """Restore a backup (its id or `latest`) into a throwaway sandbox and check its data and login there."""
    return Status(202, services.describe_operation(backups.verify(_actor(request), name, snapshot)))


@api.get("/instances/{name}/backup-policy", response={200: s.PolicyOut, **ERRORS}, tags=["backups"])
def get_backup_policy(request: HttpRequest, name: str) -> dict[str, Any]:
    return backups.get_policy(_actor(request), name=name)


@api.put("/instances/{name}/backup-policy", response={200: s.PolicyOut, **ERRORS}, tags=["backups"])
def set_backup_policy(request: HttpRequest, name: str, body: s.PolicyIn) -> dict[str, Any]:
    """Set the instance's own policy; what is not given stays as it applies now."""
    return backups.set_policy(_actor(request), name=name, **body.model_dump()).describe(name)


@api.get("/backups/repository", response={200: s.RepositoryOut, **ERRORS}, tags=["backups"], exclude_unset=True)
def backup_repository(request: HttpRequest) -> dict[str, Any]:
    """Where backups go; operators also see the state of its maintenance."""
    return backups.repository(_actor(request))


@api.post("/backups/repository/check", response={202: s.RepositoryOut, **ACTING}, tags=["backups"],
          exclude_unset=True)
def check_repository(request: HttpRequest) -> Status[dict[str, Any]]:
    """Operators only: run the repository's maintenance (retention, prune, check) as soon as no backup runs."""
    actor = _actor(request)
    backups.request_maintenance(actor)
    return Status(202, backups.repository(actor))


# -- nodes (operators) -----------------------------------------------------------------------------------


@api.get("/nodes", response={200: list[s.NodeOut], **ERRORS, **ENGINE_DOWN}, tags=["nodes"])
def list_nodes(request: HttpRequest) -> list[dict[str, Any]]:
    """The swarm's nodes with their resources, what instances reserve there, and drains under way."""
    return nodes.list_nodes(_actor(request))


@api.get("/nodes/join-command", response={200: s.JoinOut, **ERRORS, **ENGINE_DOWN}, tags=["nodes"])
def join_command(request: HttpRequest) -> dict[str, Any]:
    return nodes.join_command(_actor(request))


@api.post("/nodes/{node}/labels", response={200: s.NodeOut, **ERRORS, **ENGINE_DOWN}, tags=["nodes"])
def label_node(request: HttpRequest, node: str, body: s.NodeLabelsIn) -> dict[str, Any]:
    return nodes.label(_actor(request), node, body.changes)


@api.post("/nodes/{node}/drain", response={202: s.DrainOut, **ERRORS, **ENGINE_DOWN}, tags=["nodes"])
def drain_node(request: HttpRequest, node: str) -> Status[dict[str, Any]]:
    """Move every instance off the node with its data, a few at a time; follow the operations."""
    return Status(202, nodes.drain(_actor(request), node))


@api.post("/nodes/{node}/activate", response={200: s.NodeOut, **ERRORS, **ENGINE_DOWN}, tags=["nodes"])
def activate_node(request: HttpRequest, node: str) -> dict[str, Any]:
    return nodes.activate(_actor(request), node)


@api.get("/nodes/{node}/evacuation", response={200: s.EvacuationOut, **ERRORS, **ENGINE_DOWN}, tags=["nodes"])
def evacuation_plan(request: HttpRequest, node: str) -> dict[str, Any]:
    """What an evacuation of a node that does not answer would restore, and what each instance loses."""
    return nodes.evacuation_plan(_actor(request), node)


@api.post("/nodes/{node}/evacuate", response={202: s.EvacuationOut, **ERRORS, **ENGINE_DOWN}, tags=["nodes"])
def evacuate_node(request: HttpRequest, node: str, body: s.EvacuateIn) -> Status[dict[str, Any]]:
    return Status(202, nodes.evacuate(_actor(request), node, confirm=body.confirm))


@api.delete("/nodes/{node}", response={204: None, **ERRORS, **ENGINE_DOWN}, tags=["nodes"])
def remove_node(request: HttpRequest, node: str, force: bool = False) -> Status[None]:
    nodes.remove(_actor(request), node, force=force)
    return Status(204, None)


# -- mail relay (operators) ------------------------------------------------------------------------------


@api.get("/mail", response={200: s.MailStatusOut, **ERRORS, **ENGINE_DOWN}, tags=["mail"])
def mail_status(request: HttpRequest) -> dict[str, Any]:
    """The apps' mail relay: its state, the smarthost (no password), the rate limit, the instances it serves."""
    return mail.status(_actor(request))


@api.post("/mail/test", response={202: s.MailTestOut, **ERRORS, **ENGINE_DOWN}, tags=["mail"])
def mail_test(request: HttpRequest, body: s.MailTestIn) -> Status[dict[str, Any]]:
    """Hand a test mail to the relay, from HAFEN_MAIL_FROM to `address`."""
    return Status(202, mail.send_test(_actor(request), body.address))


# -- rollouts -------------------------------------------------------------------------------------------


def _in_utc(moment: datetime | None) -> datetime | None:
    """A start time with its zone, in UTC (the service refuses one without a zone); one the database cannot
    hold is bad input."""
    if moment is None or moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidInput("start_at is out of range") from None


@api.post("/rollouts", response={202: s.RolloutOut, **ACTING}, tags=["rollouts"])
def create_rollout(request: HttpRequest, body: s.RolloutIn) -> Status[dict[str, Any]]:
    """Update every instance of `app` the caller may update (of `organisation`) to `version`: the canaries first,
    then batches of `batch`, each inside its organisation's update window; the first update that fails (and
    rolls back) ends the rollout. Follow it at `/rollouts/{id}`."""
    rollout = rollouts.create(_actor(request), body.app, body.version, organisation=body.organisation,
                              canary=body.canary, canaries=body.canaries, batch=body.batch,
                              start_at=_in_utc(body.start_at))
    return Status(202, rollouts.describe(rollout))


@api.get("/rollouts", response={200: list[s.RolloutSummaryOut], **ERRORS}, tags=["rollouts"])
def list_rollouts(request: HttpRequest, limit: int = 50) -> list[dict[str, Any]]:
    """The latest rollouts the caller may see, newest first."""
    if not 1 <= limit <= 200:
        raise InvalidInput("limit is between 1 and 200")
    return [rollouts.describe(r) for r in rollouts.listing(_actor(request), limit)]


@api.get("/rollouts/{rollout_id}", response={200: s.RolloutOut, **ERRORS}, tags=["rollouts"])
def get_rollout(request: HttpRequest, rollout_id: int) -> dict[str, Any]:
    """A rollout with each of its instances: its turn, state, version before and now, and why."""
    return rollouts.describe(rollouts.get(_actor(request), rollout_id))


def _rollout_control(action: str, summary: str) -> None:
    control = getattr(rollouts, action)

    def view(request: HttpRequest, rollout_id: int) -> dict[str, Any]:
        return rollouts.describe(control(_actor(request), rollout_id))

    view.__name__ = f"{action}_rollout"
    api.post(f"/rollouts/{{rollout_id}}/{action}", response={200: s.RolloutOut, **ERRORS}, tags=["rollouts"],
             summary=summary, operation_id=f"{action}_rollout")(view)


_rollout_control("pause", "Pause a rollout: no further update starts; those under way finish")
_rollout_control("resume", "Resume a paused rollout")
_rollout_control("cancel", "Cancel a rollout: no further update starts; those under way finish or roll back")


# -- audit log -------------------------------------------------------------------------------------------


class AuditFilter(PageQuery):
    instance: str = ""
    action: str = ""
    actor: str = ""
    result: str = ""
    organisation: str = ""


class AuditPage(Schema):
    count: int
    items: list[s.AuditOut]


@api.get("/audit", response={200: AuditPage, **ERRORS}, tags=["audit"])
def audit_log(request: HttpRequest, filters: Query[AuditFilter]) -> dict[str, Any]:
    """Who did what, newest first; customers see their organisations' entries and their own."""
    page, per_page = filters.clean()
    entries = audit.search(_actor(request), instance=filters.instance, action=filters.action,
                           actor_name=filters.actor, result=filters.result, organisation=filters.organisation)
    count, items = _page(entries, page, per_page)
    return {"count": count, "items": [audit.describe(e) for e in items]}


# -- organisations and members ---------------------------------------------------------------------------


def _organisation_out(organisation: Organisation) -> dict[str, Any]:
    return organisations.describe(organisation)


def _member_out(membership: Membership) -> dict[str, Any]:
    return {"username": membership.user.get_username(), "role": membership.role,
            "can_read_credentials": membership.can_read_credentials}


@api.get("/organisations", response={200: list[s.OrganisationOut], **ERRORS}, tags=["organisations"])
def list_organisations(request: HttpRequest) -> list[dict[str, Any]]:
    return [_organisation_out(o) for o in access.list_organisations(_actor(request))]


@api.post("/organisations", response={201: s.OrganisationOut, **ERRORS}, tags=["organisations"])
def create_organisation(request: HttpRequest, body: s.OrganisationIn) -> Status[dict[str, Any]]:
    """Operators only."""
    return Status(201, _organisation_out(access.create_organisation(_actor(request), body.slug, body.name)))


@api.get("/organisations/{slug}", response={200: s.OrganisationOut, **ERRORS}, tags=["organisations"])
def get_organisation(request: HttpRequest, slug: str) -> dict[str, Any]:
    return _organisation_out(access.get_organisation(_actor(request), slug))


@api.post("/organisations/{slug}/labels", response={200: s.OrganisationOut, **ERRORS}, tags=["organisations"])
def label_organisation(request: HttpRequest, slug: str, body: s.NodeLabelsIn) -> dict[str, Any]:
    """Operators only: set (KEY=VALUE) or remove (KEY-) the labels a node must carry to take the
    organisation's new instances."""
    return _organisation_out(access.set_node_labels(_actor(request), slug, body.changes))


@api.post("/organisations/{slug}/alert-webhook", response={200: s.OrganisationOut, **ERRORS}, tags=["organisations"])
def set_alert_webhook(request: HttpRequest, slug: str, body: s.AlertWebhookIn) -> dict[str, Any]:
    """Where the alerts about the organisation's instances are posted too ("": nowhere). Operators and the
    organisation's admins; the URL is kept encrypted and shown by its host only."""
    return _organisation_out(access.set_alert_webhook(_actor(request), slug, body.url))


@api.post("/organisations/{slug}/update-window", response={200: s.OrganisationOut, **ERRORS},
          tags=["organisations"])
def set_update_window(request: HttpRequest, slug: str, body: s.UpdateWindowIn) -> dict[str, Any]:
    """When rollouts may update the organisation's instances: a window that opens at each fire of `cron` (UTC)
    and stays open `minutes`; `cron` "" lets them update at any time. Operators and the organisation's admins."""
    return _organisation_out(rollouts.set_window(_actor(request), slug, body.cron, body.minutes))


@api.get("/organisations/{slug}/policy", response={200: s.OrganisationPolicyOut, **ERRORS}, tags=["organisations"])
def get_organisation_policy(request: HttpRequest, slug: str) -> dict[str, Any]:
    """The defaults of the organisation's instances' policy (the keys it sets; an instance's own win)."""
    return elastic.show_organisation_policy(_actor(request), slug)


@api.patch("/organisations/{slug}/policy", response={200: s.OrganisationPolicyOut, **ERRORS},
           tags=["organisations"])
def set_organisation_policy(request: HttpRequest, slug: str, body: s.ElasticPolicyIn) -> dict[str, Any]:
    """Set (a value) or take away (default) the organisation's defaults. Operators and its admins."""
    return elastic.set_organisation_policy(_actor(request), slug, **body.dict())


@api.get("/organisations/{slug}/members", response={200: list[s.MemberOut], **ERRORS}, tags=["organisations"])
def list_members(request: HttpRequest, slug: str) -> list[dict[str, Any]]:
    return [_member_out(m) for m in access.members(_actor(request), slug)]


@api.post("/organisations/{slug}/members", response={201: s.NewMemberOut, **ERRORS}, tags=["organisations"])
def add_member(request: HttpRequest, slug: str, body: s.MemberIn) -> Status[dict[str, Any]]:
    """Add a person; a new account's generated password is in this response only."""
    new = access.add_member(_actor(request), slug, body.username, body.role, body.can_read_credentials,
                            body.email)
    return Status(201, {**_member_out(new.membership), "password": new.password})


@api.patch("/organisations/{slug}/members/{username}", response={200: s.MemberOut, **ERRORS},
           tags=["organisations"])
def change_member(request: HttpRequest, slug: str, username: str, body: s.MemberChangeIn) -> dict[str, Any]:
    return _member_out(access.change_member(_actor(request), slug, username, body.role, body.can_read_credentials))


@api.delete("/organisations/{slug}/members/{username}", response={204: None, **ERRORS}, tags=["organisations"])
def remove_member(request: HttpRequest, slug: str, username: str) -> Status[None]:
    access.remove_member(_actor(request), slug, username)
    return Status(204, None)


# -- the caller and its tokens ---------------------------------------------------------------------------


@api.get("/me", response={200: s.MeOut, **ERRORS}, tags=["tokens"])
def me(request: HttpRequest) -> dict[str, Any]:
    actor = _actor(request)
    return {
        "username": actor.name, "operator": actor.is_operator, "scope": actor.scope,
        "memberships": [{"organisation": m.organisation.slug, "role": m.role}
                        for m in Membership.objects.filter(user=actor.user).select_related("organisation")],
    }


def _token_out(token: Any) -> dict[str, Any]:
    return {"id": token.id, "name": token.name, "scope": token.scope, "prefix": token.prefix,
            "created_at": token.created_at, "last_used_at": token.last_used_at, "revoked_at": token.revoked_at}


@api.get("/tokens", response={200: list[s.TokenOut], **ERRORS}, tags=["tokens"])
def list_tokens(request: HttpRequest) -> list[dict[str, Any]]:
    return [_token_out(t) for t in access.tokens(_actor(request))]


@api.post("/tokens", response={201: s.NewTokenOut, **ERRORS}, tags=["tokens"])
def create_token(request: HttpRequest, body: s.TokenIn) -> Status[dict[str, Any]]:
    """A new token of the caller; the token is in this response only."""
    record, token = access.create_token(_actor(request), body.name, body.scope)
    return Status(201, {**_token_out(record), "token": token})


@api.delete("/tokens/{token_id}", response={204: None, **ERRORS}, tags=["tokens"])
def revoke_token(request: HttpRequest, token_id: int) -> Status[None]:
    access.revoke_token(_actor(request), token_id)
    return Status(204, None)


from hafen.api.logs import router as logs_router  # noqa: E402  (after the API's error handlers)

api.add_router("/", logs_router)
# the metrics and alerts (hafen/api/metrics.py)
from hafen.api.metrics import router as metrics_router  # noqa: E402

api.add_router("", metrics_router)
