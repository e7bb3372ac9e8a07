"""When an instance's backup is due.

One cron expression (UTC) holds for the whole installation. So that its instances do not all start
at the fire time, each instance's backup lands at its own, stable point of a window after each fire:
`offset(expr, name)` within `spread(expr)`. A *slot* is a fire time plus that offset: the moment the
backup of this window became due. There is one backup per window; a failed one is retried every
`retry` until it succeeds or the next window begins.

All datetimes are timezone-aware; they are compared in UTC. Naive ones are a programming error.
"""

import hashlib
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import pairwise

from croniter import CroniterBadDateError, CroniterError, croniter

from hafen.backup.times import as_utc
from hafen.errors import InvalidInput

MAX_SPREAD = timedelta(hours=4)
REFERENCE = datetime(2026, 1, 1, tzinfo=UTC)
_SAMPLED_INTERVALS = 16

# The aliases of Vixie cron, written out: a schedule is stored as its five fields.
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EXAMPLE = 'five fields "minute hour day month weekday" in UTC, e.g. "0 3 * * *"'


def validate_cron(expr: str) -> str:
    """The expression normalised to five fields separated by single spaces; InvalidInput for anything else.

    Besides what croniter refuses: seconds and year fields, croniter's random `R` (the schedule would
    change each time it is read) and hashed `H` fields, and dates that never come (`0 0 31 2 *`).
    """
    return _validated(expr)


@lru_cache(maxsize=256)
def _validated(expr: str) -> str:
    text = expr.strip()
    fields = _ALIASES.get(text.lower(), text).split()
    normal = " ".join(fields)
    if len(fields) != 5:
        raise InvalidInput(f"not a cron schedule: {expr!r} (expected {_EXAMPLE})")
    if any(part in ("r", "h") or part.startswith(("r(", "r/", "h(", "h/"))
           for field in fields for part in field.lower().split(",")):
        raise InvalidInput(f"not a cron schedule: {expr!r} (random R and hashed H fields are not supported)")
    try:
        croniter.expand(normal, strict=True)
        croniter(normal, REFERENCE).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidInput(f"not a cron schedule: {expr!r} never fires") from None
    except (CroniterError, ValueError, TypeError) as exc:
        raise InvalidInput(f"not a cron schedule: {expr!r} ({exc})") from None
    return normal


def _whole_second(moment: datetime) -> datetime:
    """Cron times fall on whole seconds; comparing at that resolution spares croniter's float timestamps."""
    return moment.replace(microsecond=0)


@lru_cache(maxsize=256)
def spread(expr: str) -> timedelta:
    """Half the shortest interval between consecutive fires after REFERENCE, at most MAX_SPREAD.

    The shortest of the first few intervals rather than the first one alone, so that for uneven
    schedules (`*/25`, `0,40`) one window's backups still start before the next fire.
    """
    it = croniter(_validated(expr), REFERENCE)
    fires = [it.get_next(datetime) for _ in range(_SAMPLED_INTERVALS + 1)]
    shortest = min(later - earlier for earlier, later in pairwise(fires))
    return min(shortest / 2, MAX_SPREAD)


def offset(expr: str, name: str) -> timedelta:
    """The instance's stable place in the window, in whole seconds: a fraction of `spread` from sha256(name)."""
    fraction = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    return timedelta(seconds=int(fraction * spread(expr).total_seconds()))


def current_slot(expr: str, name: str, now: datetime) -> datetime | None:
    """F + offset for the latest fire time F with F + offset <= now; None if there is none (far past)."""
    shift = offset(expr, name)
    latest = _whole_second(as_utc(now) - shift) + timedelta(seconds=1)
    try:
        fire: datetime = croniter(_validated(expr), latest).get_prev(datetime)
    except CroniterBadDateError:
        return None
    return fire + shift


def is_due(
    expr: str,
    name: str,
    *,
    created: datetime,
    last_success: datetime | None,
    last_attempt: datetime | None,
    now: datetime,
    retry: timedelta = timedelta(minutes=15),
) -> bool:
    """Whether to start a backup now: one per window, a failed one retried every `retry`.

    An instance created after the current slot waits for the next one.
    """
    slot = current_slot(expr, name, now)
    if slot is None or slot < as_utc(created):
        return False
    if last_success is not None and as_utc(last_success) >= slot:
        return False
    return last_attempt is None or as_utc(last_attempt) < slot or as_utc(now) - as_utc(last_attempt) >= retry


def next_run(expr: str, name: str, now: datetime) -> datetime:
    """The first slot after now (F + offset > now), for display: "next backup at ...".

    Between a fire time and this instance's offset the slot of that fire time is still ahead, so it
    is the answer, not the next fire time's.
    """
    shift = offset(expr, name)
    fire: datetime = croniter(_validated(expr), _whole_second(as_utc(now) - shift)).get_next(datetime)
    return fire + shift


def window_open(expr: str, minutes: int, now: datetime) -> bool:
    """Whether a window that opens at each fire of `expr` and lasts `minutes` is open at `now`."""
    moment = _whole_second(as_utc(now))
    start: datetime = croniter(_validated(expr), moment + timedelta(seconds=1)).get_prev(datetime)
    return moment < start + timedelta(minutes=minutes)


def next_window(expr: str, now: datetime) -> datetime:
    """When such a window opens next after `now`."""
    opens: datetime = croniter(_validated(expr), _whole_second(as_utc(now))).get_next(datetime)
    return opens
