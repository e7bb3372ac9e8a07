"""Errors grouped by signature per instance, and what the alerts and metrics read of them.

A signature is the exception's type with its frames (file and function, no line numbers) and its message
with numbers, ids, addresses and quoted values taken out; an error line outside a traceback is its
message so normalised. Two occurrences of the same fault in one instance so share a group, whose count
grows; a new group is a new kind of error (the metrics export each instance's count of kinds, and the
NewErrorKind rule alerts when it grows).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from hafen.logs.models import ErrorGroup
from hafen.logs.parse import Line, Traceback

_NORMALISE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<uuid>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ][\d:.,]+(?:Z|[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(r"\b\d+(?:\.\d+)*\b"), "<n>"),
    (re.compile(r"'[^']*'"), "'<s>'"),
    (re.compile(r'"[^"]*"'), '"<s>"'),
    (re.compile(r"\s+"), " "),
]
# what a log line starts with before its message: a time stamp, a level, a logger's name in brackets
_LINE_HEAD = re.compile(r"^(?:[\[\]\d:.,TZ+\- /]+\s*)?(?:\[?(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\]?\s*)?",
                        re.I)


def normalise(text: str) -> str:
    for pattern, replacement in _NORMALISE:
        text = pattern.sub(replacement, text)
    return text.strip()[:500]


@dataclass
class Occurrence:
    instance: str
    org: str
    service: str
    ts: float
    kind: str
    message: str
    signature: str
    sample: str


def occurrence(event: Traceback | Line, org: str) -> Occurrence:
    if isinstance(event, Traceback):
        line = event.line
        message = normalise(event.exc_message)
        frames = "|".join(f"{re.sub(r'[0-9]+', '<n>', f)}:{fn}" for f, fn in event.frames)
        signature = _sha(f"{event.exc_type}\n{frames}\n{message}")
        sample = "\n".join([*event.context, *event.lines])
        return Occurrence(line.instance, org, line.service, line.ts, event.exc_type[:200], message, signature, sample)
    message = normalise(_LINE_HEAD.sub("", event.message))
    return Occurrence(event.instance, org, event.service, event.ts, "error line", message,
                      _sha(f"line\n{event.service}\n{message}"), event.message)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def record(occurrences: Iterable[Occurrence]) -> int:
    """Count the occurrences into their groups (new ones made); return how many groups are new."""
    merged: dict[tuple[str, str], tuple[Occurrence, int, float, float]] = {}
    for occ in occurrences:
        key = (occ.instance, occ.signature)
        first, count, low, high = merged.get(key, (occ, 0, occ.ts, occ.ts))
        merged[key] = (first, count + 1, min(low, occ.ts), max(high, occ.ts))
    new = 0
    with transaction.atomic():
        for (instance, signature), (occ, count, low, high) in merged.items():
            first_seen, last_seen = _when(low), _when(high)
            updated = ErrorGroup.objects.filter(instance=instance, signature=signature).update(
                count=F("count") + count, last_seen=last_seen)
            if not updated:
                ErrorGroup.objects.create(instance=instance, org=occ.org, service=occ.service, signature=signature,
                                          kind=occ.kind, message=occ.message, sample=occ.sample[:20000],
                                          first_seen=first_seen, last_seen=last_seen, count=count)
                new += 1
    return new


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


# -- what the alerts and the metrics read ---------------------------------------------------------------


def kinds_per_instance() -> list[tuple[str, str, int]]:
    """(instance, organisation, number of kinds of error) for each instance that has any: rows for a
    prometheus_client collector (hafen's own services: instance "")."""
    rows = ErrorGroup.objects.values("instance", "org").annotate(kinds=Count("id")).order_by("instance")
    return [(r["instance"], r["org"], r["kinds"]) for r in rows]


def prune(before: datetime) -> int:
    """Forget the kinds of error not seen since `before` (the retention of the lines)."""
    return ErrorGroup.objects.filter(last_seen__lt=before).delete()[0]


def since_days(days: float) -> datetime:
    return timezone.now() - timedelta(days=days)
