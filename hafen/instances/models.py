"""Desired state and recorded work: instances, their secrets, operations."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone


class State(models.TextChoices):
    PENDING = "pending"
    CREATING = "creating"
    RESTORING = "restoring"
    MOVING = "moving"  # to another node, with its data (a drain or an evacuation)
    UPDATING = "updating"  # to another version or build of its app (see controller/updates.py)
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DELETED = "deleted"
    ERROR = "error"
    # the node that holds its data does not answer (not the instance's fault: not an error)
    UNREACHABLE = "unreachable"
    # no request for its idle time: its web service (and in deep sleep its database and cache) scaled to
    # zero; the first request wakes it (see instances/policy.py). Not stopped: only these wake by themselves.
    SLEEPING = "sleeping"
    WAKING = "waking"


class Desired(models.TextChoices):
    RUNNING = "running"
    STOPPED = "stopped"
    DELETED = "deleted"
    ERASED = "erased"


class Sleep(models.TextChoices):
    AWAKE = ""
    LIGHT = "light"  # the web service is at zero replicas
    DEEP = "deep"  # every service is


class Instance(models.Model):
    name = models.CharField(max_length=32, unique=True)
    app = models.CharField(max_length=32)
    version = models.CharField(max_length=32)
    domain = models.CharField(max_length=253, unique=True)
    size = models.CharField(max_length=16, default="small")
    # None: the operators' own instance, outside any customer's organisation.
    organisation = models.ForeignKey(
        "access.Organisation", null=True, blank=True, on_delete=models.PROTECT, related_name="instances"
    )
    replicas = models.PositiveIntegerField(default=1)
    desired_state = models.CharField(max_length=16, choices=Desired.choices, default=Desired.RUNNING)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    error = models.TextField(blank=True, default="")
    restart_count = models.PositiveIntegerField(default=0)
    # What the controller last saw of the stack: {service: {replicas, running, state, error}}.
    observed = models.JSONField(default=dict, blank=True)
    # A throwaway copy that a verification restores a backup into: no domain at the edge, never listed.
    sandbox = models.BooleanField(default=False)
    # Its data is being replaced (restore in place) or migrated (update): the edge shows the "starting"
    # page (or the "updating" one, see `notice`), the web is down.
    maintenance = models.BooleanField(default=False)
    # What the edge's page says while `maintenance` holds: "" (starting) or "updating".
    notice = models.CharField(max_length=16, blank=True, default="")
    # The image each tag of its stack names, by image id ("sha256:..."), pinned when first deployed: a
    # rebuilt image reaches the instance only through an update (`hafen update`), never by itself.
    images = models.JSONField(default=dict, blank=True)
    # The swarm node that holds its volumes and runs its stateful services ("" for an instance made before
    # hafen placed instances: it stays where Docker put it). The name is what the node was called then.
    node_id = models.CharField(max_length=64, blank=True, default="")
    node_name = models.CharField(max_length=253, blank=True, default="")
    # Its own settings of the elastic-capacity policy ({"idle": seconds or null for never, ...}); a key
    # it lacks comes from its organisation, its size or the installation (see instances/policy.py).
    policy = models.JSONField(default=dict, blank=True)
    # How far asleep the controller has put it, and when; the edge's last request for it, as the
    # controller last recorded it (its idle clock survives a restart of the controller).
    sleep = models.CharField(max_length=8, choices=Sleep.choices, blank=True, default=Sleep.AWAKE)
    slept_at = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    # the web replicas its events ask for now (the controller sets it; 0: no event): it runs at least these
    floor_replicas = models.PositiveIntegerField(default=0)
    # ... and the size whose limits its services get meanwhile, if larger than its own ("": its own)
    floor_size = models.CharField(max_length=16, blank=True, default="")
    # the web replicas autoscaling chose (0: no autoscaling: `replicas` holds)
    auto_replicas = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def secret_versions(self, operation: Operation | None = None) -> dict[str, int]:
        """The current version of each secret: the newest active one, or the one `operation` introduces."""
        versions: dict[str, int] = {}
        introduced: dict[str, int] = {}
        for secret in self.secrets.all():
            if secret.status == SecretStatus.ACTIVE:
                versions[secret.name] = max(versions.get(secret.name, 0), secret.version)
            elif operation is not None and secret.status == SecretStatus.PENDING \
                    and secret.operation_id == operation.pk:
                introduced[secret.name] = secret.version
        return {**versions, **introduced}


class SecretStatus(models.TextChoices):
    # the app has this value (only the newest active version is current)
    ACTIVE = "active"
    # a passwd operation is handing it to the app
    PENDING = "pending"
    # the app never took it; the row stays so that its version number is never reused
    FAILED = "failed"


class InstanceSecret(models.Model):
    """One version of a generated secret, encrypted with the installation's key."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=64)
    version = models.PositiveIntegerField(default=1)
    ciphertext = models.TextField()
    status = models.CharField(max_length=8, choices=SecretStatus.choices, default=SecretStatus.ACTIVE)
    # The operation that hands a new version to the app.
    operation = models.ForeignKey("Operation", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="new_secrets")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instance", "name", "version"], name="unique_secret_version")
        ]

    def __str__(self) -> str:
        return f"{self.instance_id}:{self.name}:v{self.version}"


class OpState(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # ended unfinished because a newer operation changed what the instance should be
    SUPERSEDED = "superseded"
    # an update that failed and put the instance back as it was (its old version, with its data)
    ROLLED_BACK = "rolled back"


ACTIVE_STATES = (OpState.PENDING, OpState.RUNNING)


class Operation(models.Model):
    """One recorded unit of work on an instance, run step by step by the controller."""

    instance = models.ForeignKey(Instance, null=True, on_delete=models.SET_NULL, related_name="operations")
    instance_name = models.CharField(max_length=32)
    # Kept so that the organisation still sees the operation once an erase has removed the instance.
    organisation = models.ForeignKey("access.Organisation", null=True, blank=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=16)
    state = models.CharField(max_length=16, choices=OpState.choices, default=OpState.PENDING)
    # [{"name": ..., "title": ..., "state": pending|running|done|failed|superseded, "detail": ...}]
    steps = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")
    # What the operation works with beyond the instance: {"snapshot": id, "safety": id, "restore": id, ...}.
    params = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.instance_name} ({self.state})"

    @property
    def done(self) -> bool:
        return self.state not in ACTIVE_STATES

    @property
    def progress(self) -> float:
        if not self.steps:
            return 1.0 if self.done else 0.0
        return sum(1 for s in self.steps if s["state"] == "done") / len(self.steps)

    def current_step(self) -> dict[str, Any] | None:
        return next((s for s in self.steps if s["state"] != "done"), None)


class Lock(models.Model):
    """Refuses chosen actions on an instance, with a reason, until it is lifted.

    A lock an operator set can be lifted only by an operator.
    """

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="locks")
    actions = models.JSONField(default=list)
    reason = models.CharField(max_length=200)
    created_by = models.CharField(max_length=150)
    by_operator = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"lock on {self.instance_id}: {', '.join(self.actions)} ({self.reason})"


class ControlPlane(models.Model):
    """A single row: the running controller's heartbeat."""

    pid = models.IntegerField(default=0)
    started_at = models.DateTimeField(null=True)
    beat_at = models.DateTimeField(null=True)
    edge_config = models.CharField(max_length=64, blank=True, default="")
    # how long the last pass took, in seconds: what a fleet of this size costs the controller
    pass_seconds = models.FloatField(default=0.0)
    # whether its passes rest (nothing stirred for a while: see controller/loop.py)
    resting = models.BooleanField(default=False)
    # The image id each tag of the catalogue names, as the controller last saw it: what an update would
    # pin (pages and lists read it here, never from the engine, which may not answer).
    images = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"controller pid {self.pid}"


class SnapshotStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    # removed from the repository by the retention policy
    FORGOTTEN = "forgotten"


class Verification(models.TextChoices):
    UNVERIFIED = "unverified"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    FAILED = "failed"


class Snapshot(models.Model):
    """One backup of one instance: a database dump and the app's volumes in the restic repository.

    Kept after the instance is erased (by name and organisation), so that it can be restored.
    """

    instance = models.ForeignKey(Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="snapshots")
    instance_name = models.CharField(max_length=32, db_index=True)
    organisation = models.ForeignKey("access.Organisation", null=True, blank=True, on_delete=models.SET_NULL)
    # scheduled, manual, safety (before a restore in place) or clone
    reason = models.CharField(max_length=16, default="manual")
    status = models.CharField(max_length=16, choices=SnapshotStatus.choices, default=SnapshotStatus.PENDING)
    error = models.TextField(blank=True, default="")
    # restic's ids: the snapshot of the volumes and the manifest (the one users name), and the dump's
    restic_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    db_snapshot_id = models.CharField(max_length=64, blank=True, default="")
    app = models.CharField(max_length=32)
    version = models.CharField(max_length=32)
    domain = models.CharField(max_length=253, blank=True, default="")
    total_bytes = models.BigIntegerField(null=True, blank=True)
    added_bytes = models.BigIntegerField(null=True, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    verification = models.CharField(max_length=16, choices=Verification.choices, default=Verification.UNVERIFIED)
    verification_error = models.TextField(blank=True, default="")
    verified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"snapshot {self.short_id or self.pk} of {self.instance_name} ({self.status})"

    @property
    def short_id(self) -> str:
        return self.restic_id[:8]


class BackupPolicy(models.Model):
    """When to back up and what to keep: for the installation (no organisation, no instance), an
    organisation, or one instance; the most specific one applies."""

    organisation = models.OneToOneField("access.Organisation", null=True, blank=True, on_delete=models.CASCADE,
                                        related_name="backup_policy")
    instance = models.OneToOneField(Instance, null=True, blank=True, on_delete=models.CASCADE,
                                    related_name="backup_policy")
    schedule = models.CharField(max_length=64, default="0 2 * * *")
    enabled = models.BooleanField(default=True)
    keep_daily = models.PositiveIntegerField(default=7)
    keep_weekly = models.PositiveIntegerField(default=4)
    keep_monthly = models.PositiveIntegerField(default=6)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        if self.instance_id:
            scope = f"instance {self.instance_id}"
        else:
            scope = f"organisation {self.organisation_id}" if self.organisation_id else "installation"
        return f"backup policy of {scope}: {self.schedule}"


class Repository(models.Model):
    """A single row: the state of the backup repository and of its maintenance (retention, prune, check)."""

    initialised_at = models.DateTimeField(null=True, blank=True)
    # the maintenance job that runs now ("" when none), and when it started
    maintenance_run = models.CharField(max_length=32, blank=True, default="")
    maintenance_started_at = models.DateTimeField(null=True, blank=True)
    maintenance_forget = models.JSONField(default=list, blank=True)
    # an operator asked for maintenance now (`hafen repository --check`)
    maintenance_requested = models.BooleanField(default=False)
    last_maintenance_at = models.DateTimeField(null=True, blank=True)
    last_prune_at = models.DateTimeField(null=True, blank=True)
    last_check_at = models.DateTimeField(null=True, blank=True)
    check_ok = models.BooleanField(null=True)
    check_message = models.TextField(blank=True, default="")
    # which part of the data the next check reads (--read-data-subset n/N), rotating
    check_subset = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return "backup repository"


class RolloutState(models.TextChoices):
    SCHEDULED = "scheduled"  # waits for its start time
    RUNNING = "running"
    PAUSED = "paused"  # no new instance is started; those under way finish
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an instance's update failed: no further instance was touched
    CANCELLED = "cancelled"


class Rollout(models.Model):
    """An update of many instances of one app to one version: canaries first, then batches."""

    app = models.CharField(max_length=32)
    version = models.CharField(max_length=32)
    # None: the instances of every organisation (and the operators' own) the creator may update
    organisation = models.ForeignKey("access.Organisation", null=True, blank=True, on_delete=models.SET_NULL)
    canary = models.PositiveIntegerField(default=1)
    batch = models.PositiveIntegerField(default=1)
    start_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=16, choices=RolloutState.choices, default=RolloutState.SCHEDULED)
    error = models.TextField(blank=True, default="")
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"rollout {self.pk} of {self.app} {self.version} ({self.state})"


class ItemState(models.TextChoices):
    PENDING = "pending"
    UPDATING = "updating"
    UPDATED = "updated"
    ROLLED_BACK = "rolled back"
    FAILED = "failed"
    SKIPPED = "skipped"  # not updated, and why (`message`): on the version already, locked, stopped, gone
    NOT_TOUCHED = "not touched"  # the rollout ended (failed, cancelled) before its turn


class RolloutItem(models.Model):
    """One instance of a rollout, in its turn: `wave` 0 holds the canaries, then the batches."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="items")
    instance = models.ForeignKey(Instance, null=True, blank=True, on_delete=models.SET_NULL)
    instance_name = models.CharField(max_length=32)
    organisation = models.ForeignKey("access.Organisation", null=True, blank=True, on_delete=models.SET_NULL)
    wave = models.PositiveIntegerField()
    canary = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=ItemState.choices, default=ItemState.PENDING)
    from_version = models.CharField(max_length=32, blank=True, default="")
    version = models.CharField(max_length=32, blank=True, default="")  # what it runs now, as last seen
    operation = models.ForeignKey(Operation, null=True, blank=True, on_delete=models.SET_NULL)
    message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["wave", "id"]


class Decision(models.Model):
    """What the controller decided from an instance's policy, why, and the numbers it saw."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="decisions")
    at = models.DateTimeField(default=timezone.now)
    action = models.CharField(max_length=16)  # sleep, deep-sleep, wake
    reason = models.TextField()
    numbers = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.instance_id} {self.action} at {self.at:%Y-%m-%d %H:%M:%S}"


class Event(models.Model):
    """An event of an instance (an assembly): before it and during it the instance is awake, with the web
    replicas its expected participants need (the app's participants table)."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="events")
    title = models.CharField(max_length=100, blank=True, default="")
    start_at = models.DateTimeField()
    end_at = models.DateTimeField()
    participants = models.PositiveIntegerField()
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["start_at", "id"]

    def __str__(self) -> str:
        return f"{self.instance_id}: {self.title or 'event'} at {self.start_at:%Y-%m-%d %H:%M}"
