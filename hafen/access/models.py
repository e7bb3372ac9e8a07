"""Customers and their people, API tokens, and the audit log.

Operators are Django users with `is_staff`; everyone else belongs to one or
more organisations through a membership that carries the role.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Organisation(models.Model):
    slug = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    # labels a swarm node must carry to take this organisation's new instances ({} = any node)
    node_labels = models.JSONField(default=dict, blank=True)
    # When a fleet rollout may update this organisation's instances: a window opens at each fire of the
    # cron expression (UTC) and stays open this many minutes; "" = at any time.
    update_window = models.CharField(max_length=64, blank=True, default="")
    update_window_minutes = models.PositiveIntegerField(default=0)
    # Defaults of the elastic-capacity policy for its instances (keys as Instance.policy).
    policy = models.JSONField(default=dict, blank=True)
    # Where the alerts about its instances are posted too (Alertmanager's webhook format), encrypted: such a
    # URL carries its receiver's token. "" = none.
    alert_webhook = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    ADMIN = "admin"
    MEMBER = "member"


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    # Whether a member may reveal instance credentials; admins always may.
    can_read_credentials = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organisation"], name="one_membership_per_org")]
        ordering = ["organisation__slug", "user__username"]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.organisation_id}:{self.role}"


class Scope(models.TextChoices):
    READ = "read"
    WRITE = "write"


class ApiToken(models.Model):
    """A bearer token; only its SHA-256 is stored, the token itself is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=64)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    prefix = models.CharField(max_length=12)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class Result(models.TextChoices):
    OK = "ok"
    REFUSED = "refused"
    FAILED = "failed"


class AuditEntry(models.Model):
    """Who did what to which instance (or organisation), when, from where, with what result.

    Kept by name, not by foreign key, so that the trail outlives an erased instance.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=150)
    via = models.CharField(max_length=8)
    source = models.CharField(max_length=64, blank=True, default="")
    action = models.CharField(max_length=32, db_index=True)
    organisation = models.ForeignKey(Organisation, null=True, blank=True, on_delete=models.SET_NULL)
    instance_name = models.CharField(max_length=32, blank=True, default="", db_index=True)
    detail = models.JSONField(default=dict, blank=True)
    result = models.CharField(max_length=8, choices=Result.choices)
    message = models.TextField(blank=True, default="")
    operation_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.instance_name} {self.result}"
