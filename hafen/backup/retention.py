"""Which snapshots to forget: restic's `forget --keep-daily/--keep-weekly/--keep-monthly`, computed here.

Computed rather than left to restic so that the UI can show what a policy would keep, and so that
forgetting is by explicit snapshot ids.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from hafen.backup.times import as_utc
from hafen.errors import InvalidInput


@dataclass(frozen=True)
class Keep:
    daily: int = 7
    weekly: int = 4
    monthly: int = 6

    def __post_init__(self) -> None:
        for field in ("daily", "weekly", "monthly"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInput(f"keep {field} must be a whole number >= 0, not {value!r}")


_BUCKETS: tuple[tuple[str, Callable[[datetime], object]], ...] = (
    ("daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", lambda t: t.isocalendar()[:2]),
    ("monthly", lambda t: (t.year, t.month)),
)


def to_forget(snapshots: list[tuple[str, datetime]], keep: Keep) -> set[str]:
    """The ids of the snapshots to forget, as restic's ApplyPolicy decides (times compared in UTC).

    Newest first (ties in the given order); per policy, a snapshot is kept if it is the newest of its
    bucket (day, ISO week, month) while the policy has buckets left to count. Like restic, a policy
    that still has buckets left when it reaches the oldest snapshot keeps that one too, even if its
    bucket was counted already: this keeps the longest history the counts allow. Unlike restic, which
    refuses an empty policy, all zeros keep only the newest snapshot, which is always kept.
    """
    if not snapshots:
        return set()
    ordered = sorted(snapshots, key=lambda snap: as_utc(snap[1]), reverse=True)
    kept = {ordered[0][0]}
    oldest = len(ordered) - 1
    for policy, bucket_of in _BUCKETS:
        left: int = getattr(keep, policy)
        last: object = None
        for nr, (snapshot_id, when) in enumerate(ordered):
            if left == 0:
                break
            bucket = bucket_of(as_utc(when))
            if bucket != last or nr == oldest:
                kept.add(snapshot_id)
                last = bucket
                left -= 1
    return {snapshot_id for snapshot_id, _ in snapshots} - kept
