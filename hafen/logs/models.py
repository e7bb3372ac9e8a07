"""Grouped errors: one row per kind of error (signature) per instance."""

from __future__ import annotations

from django.db import models


class ErrorGroup(models.Model):
    # the instance by name ("" for hafen's own services), and its organisation's slug at the time ("":
    # none): kept as text so that the group outlives an erase, and is never shown to another organisation
    instance = models.CharField(max_length=32, blank=True, default="")
    org = models.CharField(max_length=64, blank=True, default="")
    service = models.CharField(max_length=64, blank=True, default="")
    signature = models.CharField(max_length=64)
    kind = models.CharField(max_length=200)  # the exception's type, or "error line"
    message = models.TextField(blank=True, default="")  # the normalised message
    sample = models.TextField(blank=True, default="")  # the first occurrence: context, then the error
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    count = models.PositiveBigIntegerField(default=1)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "signature"], name="error_group_unique")]
        indexes = [models.Index(fields=["last_seen"]), models.Index(fields=["first_seen"])]

    def __str__(self) -> str:
        return f"{self.instance or 'hafen'}: {self.kind}"
