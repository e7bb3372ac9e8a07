"""Request and response bodies of the REST API, which are also its OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Field, Schema


class ErrorDetail(Schema):
    code: str
    message: str


class ErrorOut(Schema):
    error: ErrorDetail


class ReplicasOut(Schema):
    desired: int = Field(description="What the web service runs when awake: the larger of `autoscaled` (or, "
                                     "without autoscaling, `set`) and `floor`")
    running: int
    set: int = Field(description="The instance's own replicas (`hafen scale`)")
    autoscaled: int | None = Field(default=None, description="Autoscaling's choice (null: no autoscaling)")
    floor: int | None = Field(default=None, description="What an event in its window asks for (null: none)")


class ServiceOut(Schema):
    replicas: int
    running: int
    state: str
    error: str


class BackupStatusOut(Schema):
    last_backup: str | None
    last_backup_status: str | None
    last_verified: str | None
    last_verified_id: str | None
    problems: list[str] = Field(description="What is wrong with the instance's backups: none verified in 48 hours, "
                                            "the last backup failed, a verification failed")


class PolicyOut(Schema):
    schedule: str = Field(description="When to back up, a cron expression (UTC)")
    enabled: bool
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    set_for: str = Field(description="Where the policy was set: installation, organisation or instance")
    next_backup: str | None = Field(default=None, description="The next scheduled backup; null when off")


class InstanceBackupsOut(BackupStatusOut):
    policy: PolicyOut
    repository: str
    off_host: bool = Field(description="false: backups are written to this host only")


class UpdateOfferOut(Schema):
    available: bool = Field(description="A newer version, or a newer build of the version it runs")
    versions: list[str] = Field(description="The newer versions of its app, oldest first")
    rebuilt: bool = Field(description="An image of the version it runs was rebuilt since it was pinned")


class UpdatePlanOut(Schema):
    from_version: str
    to_version: str
    plan: str = Field(description="rolling (a new build, start-first) or migrating (backup, migration, switch)")


class InstanceOut(Schema):
    name: str
    app: str
    version: str
    domain: str
    url: str
    size: str
    limits_size: str = Field(description="The size whose memory and CPU limits its services have now: its own, or "
                                         "a larger one while an event asks for it")
    organisation: str | None
    state: str
    desired_state: str
    replicas: ReplicasOut
    services: dict[str, ServiceOut]
    created_at: str
    error: str
    node: str | None = Field(default=None, description="The swarm node that holds its data (null: not placed)")
    backups: BackupStatusOut
    update: UpdateOfferOut


class StepOut(Schema):
    name: str
    title: str
    state: str
    started_at: str | None
    finished_at: str | None
    detail: str = Field(default="", description="Progress of the step as it runs (of a backup: files, bytes)")


class MoveOut(Schema):
    from_node: str = Field(description="The node it moves off")
    to_node: str = Field(description="The node it moves to (empty until chosen)")
    downtime_seconds: float | None = Field(description="From the starting page until it answered again")


class OperationOut(Schema):
    id: int
    kind: str
    instance: str
    state: str = Field(description="pending, running, succeeded, failed, superseded (a newer operation "
                                   "took over before it finished; `error` names it), or rolled back (an update "
                                   "that failed and put the instance back as it was)")
    steps: list[StepOut]
    progress: float
    error: str
    created_at: str
    finished_at: str | None
    move: MoveOut | None = Field(default=None, description="Of a move or an evacuation to another node")
    update: UpdatePlanOut | None = Field(default=None, description="Of an update")


class LockOut(Schema):
    id: int
    actions: list[str]
    reason: str
    created_by: str
    by_operator: bool
    created_at: str


class PolicyValueOut(Schema):
    value: str = Field(description="As shown: a duration (30m, 24h) or never; a number, max also off")
    seconds: int | None = Field(default=None, description="A duration in seconds; null: never")
    number: int | None = Field(default=None, description="A count or percentage; null: off")
    source: str = Field(description="Where it comes from: instance, organisation, size or installation")


class ElasticPolicyOut(Schema):
    idle: PolicyValueOut = Field(description="Without a request for this long, the instance sleeps")
    deep_sleep: PolicyValueOut = Field(description="Without a request for this long, its database and cache "
                                                   "stop too")
    hold: PolicyValueOut = Field(description="How long the edge holds a GET or HEAD to a sleeping instance until "
                                             "it answers (off: the waking page at once)")
    min: PolicyValueOut = Field(description="Autoscaling: the fewest web replicas")
    max: PolicyValueOut = Field(description="Autoscaling: the most web replicas; off: no autoscaling")
    target_inflight: PolicyValueOut = Field(description="Autoscaling: open requests per replica to aim at")
    target_cpu: PolicyValueOut = Field(description="Autoscaling: CPU per replica to aim at, % of its limit")


class DecisionOut(Schema):
    at: str
    action: str = Field(description="sleep, deep-sleep or wake")
    reason: str
    numbers: dict[str, Any] = Field(description="What the controller saw when it decided")


class ElasticOut(Schema):
    policy: ElasticPolicyOut
    sleep: str | None = Field(description="light or deep while it sleeps, else null")
    slept_at: str | None
    last_request_at: str | None = Field(description="The newest request the edge saw for it")
    decisions: list[DecisionOut]


class ElasticPolicyOfOut(ElasticOut):
    instance: str


class ElasticPolicyIn(Schema):
    idle: str | None = Field(default=None, max_length=32, description="A duration (20s, 30m, 24h), never, or "
                                                                      "default (the organisation's, size's or "
                                                                      "installation's)")
    deep_sleep: str | None = Field(default=None, max_length=32, description="As idle")
    hold: str | None = Field(default=None, max_length=8, description="off, 5s, 10s, 20s, 30s, 60s, or default")
    min: str | None = Field(default=None, max_length=8, description="1 to 32, or default")
    max: str | None = Field(default=None, max_length=8, description="1 to 32, off, or default")
    target_inflight: str | None = Field(default=None, max_length=8, description="1 to 10000, or default")
    target_cpu: str | None = Field(default=None, max_length=8, description="5 to 100 (%), or default")


class EventIn(Schema):
    start_at: str = Field(max_length=64, description="ISO time; without a zone: UTC")
    end_at: str = Field(max_length=64, description="ISO time; without a zone: UTC")
    participants: int = Field(ge=1, le=100_000, description="Expected participants: the app's table gives the web "
                                                            "replicas")
    title: str = Field(default="", max_length=100)


class EventOut(Schema):
    id: int
    instance: str
    organisation: str | None
    title: str
    start_at: str
    end_at: str
    participants: int
    web_replicas: int = Field(description="The web replicas the instance runs at least, from HAFEN_EVENT_LEAD "
                                          "before the start to the end")
    size: str = Field(description="The size whose memory and CPU limits its services have meanwhile (its own, or "
                                  "the larger one the app's participants table names)")
    created_by: str


class OrganisationPolicyOut(Schema):
    organisation: str
    policy: dict[str, str] = Field(description="The keys the organisation sets, as shown (30m, never, 4, off, "
                                               "70%)")


class InstanceDetailOut(InstanceOut):
    elastic: ElasticOut
    backups: InstanceBackupsOut
    operations: list[OperationOut]
    locks: list[LockOut]
    allowed: list[str] = Field(description="What the caller may do to this instance")


class CreateIn(Schema):
    name: str = Field(max_length=64)
    app: str = Field(max_length=32)
    version: str | None = Field(default=None, max_length=32)
    domain: str | None = Field(default=None, max_length=253)
    size: str = Field(default="small", max_length=16)
    organisation: str | None = Field(default=None, max_length=32)


class ScaleIn(Schema):
    replicas: int = Field(ge=0, le=1000)


class EraseIn(Schema):
    confirm: str = Field(description="The instance's name, typed again", max_length=64)


class SnapshotOut(Schema):
    id: str = Field(description="The first 8 hex digits of its restic id; empty until it is written")
    restic_id: str
    instance: str
    reason: str = Field(description="scheduled, manual, safety (before a restore in place) or clone")
    status: str = Field(description="pending, running, ok, failed or forgotten")
    error: str
    created_at: str
    finished_at: str | None
    size: int | None
    added: int | None = Field(description="Bytes this backup added to the repository")
    app: str
    version: str
    verification: str = Field(description="unverified, verifying, verified or failed")
    verification_error: str
    verified_at: str | None
    fingerprint: dict[str, Any] | None


class RepositoryOut(Schema):
    """The maintenance fields are for operators only; others get `repository` and `off_host`."""

    repository: str
    off_host: bool = Field(description="false: backups are written to this host only")
    last_check: str | None = None
    check_ok: bool | None = None
    check_message: str | None = None
    last_prune: str | None = None
    maintenance_running: bool | None = None
    error: str | None = None


class BackupsOut(Schema):
    instance: str
    items: list[SnapshotOut]
    policy: PolicyOut | None = Field(description="null once the instance is erased")
    status: BackupStatusOut | None
    repository: RepositoryOut


class RestoreIn(Schema):
    snapshot: str = Field(description="A backup's id (8 or more hex digits of it) or `latest`", max_length=64)
    into: str | None = Field(default=None, max_length=64,
                             description="Restore into a new instance of this name; without it, in place")
    domain: str | None = Field(default=None, max_length=253, description="The new instance's domain (with `into`)")
    organisation: str | None = Field(default=None, max_length=32,
                                     description="The new instance's organisation (with `into`)")
    confirm: str | None = Field(default=None, max_length=64,
                                description="In place: the instance's name, typed again")


class UpdateIn(Schema):
    version: str | None = Field(default=None, max_length=32, description="The app version to go to; default the "
                                "newest (the version it runs: its newest build)")
    restore: str | None = Field(default=None, max_length=64, description="Going back to an older version: a backup "
                                "taken on it, whose data replaces the current data")


class CloneIn(Schema):
    name: str = Field(max_length=64, description="The new instance's name")
    domain: str | None = Field(default=None, max_length=253)
    organisation: str | None = Field(default=None, max_length=32)


class PolicyIn(Schema):
    schedule_expr: str | None = Field(default=None, max_length=64, description="A cron expression (UTC)")
    keep_daily: int | None = Field(default=None, ge=0, le=10000)
    keep_weekly: int | None = Field(default=None, ge=0, le=10000)
    keep_monthly: int | None = Field(default=None, ge=0, le=10000)
    enabled: bool | None = None


class CredentialsOut(Schema):
    username: str
    password: str


class PasswordOut(Schema):
    operation: OperationOut
    username: str
    password: str


class LogsOut(Schema):
    service: str
    lines: list[str]


class LockIn(Schema):
    actions: list[str] = Field(max_length=10)
    reason: str = Field(max_length=500)


class AuditOut(Schema):
    id: int
    at: str
    actor: str
    via: str
    source: str
    action: str
    organisation: str | None
    instance: str
    detail: dict[str, Any]
    result: str
    message: str
    operation_id: int | None


class OrganisationIn(Schema):
    slug: str = Field(max_length=64)
    name: str = Field(default="", max_length=100)


class UpdateWindowOut(Schema):
    cron: str = Field(description="The window opens at each fire of this cron expression (UTC)")
    minutes: int = Field(description="How long it stays open")
    open: bool = Field(description="Whether it is open now")
    next: str = Field(description="When it opens next")


class OrganisationOut(Schema):
    slug: str
    name: str
    node_labels: dict[str, str] = Field(description="The labels a node must carry to take the organisation's new "
                                                    "instances ({}: any node)")
    created_at: datetime
    update_window: UpdateWindowOut | None = Field(default=None, description="When a rollout may update the "
                                                  "organisation's instances (null: at any time)")
    alert_webhook: str = Field(default="", description="The host of the webhook that hears the alerts about the "
                                                       "organisation's instances (its path is never shown); \"\": none")


class AlertWebhookIn(Schema):
    url: str = Field(max_length=500, description='An http(s) URL that Alertmanager posts the alerts about the '
                                                 'organisation\'s instances to, with their resolution; "": none')


class UpdateWindowIn(Schema):
    cron: str = Field(max_length=64, description='A cron expression (UTC): the window opens at each fire; "": '
                                                 "rollouts update the organisation's instances at any time")
    minutes: int = Field(default=0, ge=0, le=7 * 24 * 60, description="How long the window stays open (1 minute "
                                                                       "to 7 days)")


class MemberIn(Schema):
    username: str = Field(max_length=150)
    role: str = Field(default="member", max_length=16)
    can_read_credentials: bool = False
    email: str = Field(default="", max_length=254)


class MemberChangeIn(Schema):
    role: str | None = Field(default=None, max_length=16)
    can_read_credentials: bool | None = None


class MemberOut(Schema):
    username: str
    role: str
    can_read_credentials: bool


class NewMemberOut(MemberOut):
    password: str | None = Field(description="The generated password of a new account, shown once")


class TokenIn(Schema):
    name: str = Field(max_length=64)
    scope: str = Field(default="read", max_length=8)


class TokenOut(Schema):
    id: int
    name: str
    scope: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(TokenOut):
    token: str = Field(description="The token itself, shown this once")


class MeOut(Schema):
    username: str
    operator: bool
    scope: str
    memberships: list[dict[str, str]]


class NodeOut(Schema):
    id: str
    name: str
    role: str = Field(description="manager or worker")
    leader: bool
    state: str = Field(description="ready, down, unknown or disconnected")
    availability: str = Field(description="active, pause or drain")
    labels: dict[str, str]
    address: str
    cpus: float
    memory_bytes: int
    reserved_bytes: int = Field(description="Memory the instances placed here may use, by their limits")
    instances: list[str]
    draining: str = Field(description='"moving" while a drain moves instances off, "done" after it, else ""')
    moves_pending: int
    engine_version: str


class NodeLabelsIn(Schema):
    """Of a node, or of an organisation (the labels its instances' nodes must carry)."""

    changes: list[str] = Field(description="KEY=VALUE sets a label, KEY- removes one", min_length=1, max_length=32)


class DrainOut(Schema):
    node: str
    moves: list[OperationOut]
    queued_behind: list[str] = Field(description="Instances whose move waits for an operation already queued")
    left: list[str] = Field(description="Instances not moved (stopped or not running): start or erase them")


class EvacueeOut(Schema):
    instance: str
    organisation: str | None
    snapshot: str | None = Field(description="The latest verified backup (null: none, the instance is skipped)")
    backed_up_at: str | None
    data_lost_seconds: int | None = Field(description="What restoring that backup loses: the time since it")


class EvacuationOut(Schema):
    node: str
    node_id: str
    state: str
    instances: list[EvacueeOut]
    operations: list[OperationOut] = []
    skipped: list[str] = []


class EvacuateIn(Schema):
    confirm: str = Field(description="The node's name, typed: the instances lose what their backups lack",
                         max_length=253)


class JoinOut(Schema):
    join: str = Field(description="Run on the new machine to join the swarm as a worker")
    images: list[str]
    load: str = Field(description="How to copy the images there when no registry serves them")


class RolloutIn(Schema):
    app: str = Field(max_length=32, description="The app whose instances to update")
    version: str = Field(max_length=32, description="The version to update them to")
    organisation: str | None = Field(default=None, max_length=32, description="Only this organisation's instances "
                                     "(operators may leave it out: every instance they may update)")
    canary: int = Field(default=1, ge=0, le=10000, description="How many instances to update first, alone; the "
                        "rest wait until they have succeeded")
    canaries: list[Annotated[str, Field(max_length=64)]] = Field(
        default=[], max_length=100, description="Instances to take as canaries (more are chosen by name up to "
                                                "`canary`)")
    batch: int = Field(default=1, ge=1, le=10000, description="How many instances to update at once after the "
                       "canaries")
    start_at: datetime | None = Field(default=None, description="When to start, with its time zone (default: now)")


class RolloutItemOut(Schema):
    instance: str
    wave: int = Field(description="Its turn: 0 holds the canaries (if any), then the batches in order")
    canary: bool
    state: str = Field(description="pending, updating, updated, rolled back (its update failed and put it back), "
                                   "failed, skipped (not updated; `message` says why) or not touched (the rollout "
                                   "ended before its turn)")
    from_version: str = Field(description="The version it ran when the rollout was planned")
    version: str = Field(description="The version it runs, as last seen")
    message: str = Field(description="Why it was skipped or failed, or what it waits for (an update window)")
    operation: int | None = Field(description="Its update operation, once started")


class RolloutSummaryOut(Schema):
    id: int
    app: str
    version: str
    organisation: str | None = Field(description="null: the instances of every organisation the creator may "
                                                 "update")
    canary: int
    batch: int
    state: str = Field(description="scheduled (waits for `start_at`), running, paused (starts no new update; "
                                   "those under way finish), succeeded, failed (an update failed: nothing after "
                                   "it was touched) or cancelled")
    error: str = Field(description="What ended it: the first failed update, or who cancelled it")
    start_at: str
    created_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    counts: dict[str, int] = Field(description="How many of its instances are in each state")


class RolloutOut(RolloutSummaryOut):
    items: list[RolloutItemOut] = Field(description="Its instances, in their turn")


class MailInstanceOut(Schema):
    name: str
    sender: str = Field(description="The address its mails leave with (the relay rewrites the sender)")
    network: str


class MailStatusOut(Schema):
    service: str
    state: str = Field(description="running, starting, absent or failing: REASON")
    smarthost: str = Field(description="HAFEN_SMTP_URL without its password; empty: none")
    problem: str
    mode: str
    tls: str
    mail_from: str
    mail_domain: str
    rate: str = Field(description="Mails per instance and time unit (HAFEN_MAIL_RATE)")
    rate_words: str
    instances: list[MailInstanceOut]


class MailTestIn(Schema):
    address: str


class MailTestOut(Schema):
    queued: bool
    to: str
    sender: str = Field(description="HAFEN_MAIL_FROM")
    relay: str
