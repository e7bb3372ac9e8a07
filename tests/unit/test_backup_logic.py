"""hafen.backup: schedules, retention and restore fingerprints; pure logic, no I/O."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hafen.backup.fingerprint import compare, human_bytes
from hafen.backup.retention import Keep, to_forget
from hafen.backup.schedule import current_slot, is_due, next_run, offset, spread, validate_cron
from hafen.errors import InvalidInput

DAILY = "0 3 * * *"
HOURLY = "0 * * * *"
EVERY_MINUTE = "* * * * *"
LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- validate_cron -------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "normal"), [
    ("0 3 * * *", "0 3 * * *"),
    ("  0   3 *\t* *  ", "0 3 * * *"),
    ("*/15 8-18 * * mon-fri", "*/15 8-18 * * mon-fri"),
    ("0 0 1 jan,jul *", "0 0 1 jan,jul *"),
    ("0 0 29 2 *", "0 0 29 2 *"),
    ("@daily", "0 0 * * *"),
    ("@HOURLY", "0 * * * *"),
])
def test_validate_cron_normalises(expr, normal):
    assert validate_cron(expr) == normal


@pytest.mark.parametrize("expr", [
    "", "   ", "banana", "* * * *", "* * * * * *", "0 0 * * * 2030", "61 * * * *", "0 25 * * *",
    "0 0 31 2 *", "0 0 30 2 *", "R * * * *", "0 r(0-5) * * *", "H * * * *", "H/15 * * * *", "@reboot",
    "0 0 * * foo",
])
def test_validate_cron_refuses_in_one_line(expr):
    with pytest.raises(InvalidInput) as caught:
        validate_cron(expr)
    message = str(caught.value)
    assert message.startswith(f"not a cron schedule: {expr!r}")
    assert "\n" not in message


def test_every_function_validates_the_expression():
    with pytest.raises(InvalidInput):
        is_due("61 * * * *", "a", created=LONG_AGO, last_success=None, last_attempt=None, now=at(2026, 3, 1))
    with pytest.raises(InvalidInput):
        next_run("nope", "a", at(2026, 3, 1))


# --- spread and offset ---------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "expected"), [
    (EVERY_MINUTE, timedelta(seconds=30)),
    ("*/10 * * * *", timedelta(minutes=5)),
    (HOURLY, timedelta(minutes=30)),
    ("0 */6 * * *", timedelta(hours=3)),
    ("*/25 * * * *", timedelta(minutes=5)),  # fires at :00 :25 :50: the 10 minutes from :50 to :00 count
    (DAILY, timedelta(hours=4)),  # capped
    ("0 3 * * 0", timedelta(hours=4)),
    ("0 0 1 * *", timedelta(hours=4)),
])
def test_spread(expr, expected):
    assert spread(expr) == expected


def test_offsets_are_stable_sha256_values():
    """Pinned: Python's hash() of a string changes per process; these must not."""
    assert offset(HOURLY, "alpha") == timedelta(minutes=16, seconds=44)
    assert offset(DAILY, "alpha") == timedelta(hours=2, minutes=13, seconds=54)
    assert offset(EVERY_MINUTE, "beta") == timedelta(seconds=28)


def test_offsets_differ_between_names_and_stay_in_the_spread():
    names = [f"customer-{i}" for i in range(50)]
    offsets = [offset(DAILY, name) for name in names]
    assert len(set(offsets)) == len(names)
    assert all(timedelta(0) <= o < spread(DAILY) for o in offsets)
    assert max(offsets) - min(offsets) > timedelta(hours=3)  # spread over the window, not bunched


# --- current_slot and next_run -------------------------------------------------------------------

def test_current_slot_is_the_fire_time_plus_the_offset_once_reached():
    o = offset(HOURLY, "alpha")
    assert current_slot(HOURLY, "alpha", at(2026, 3, 1, 10) + o) == at(2026, 3, 1, 10) + o
    assert current_slot(HOURLY, "alpha", at(2026, 3, 1, 10, 59, 59)) == at(2026, 3, 1, 10) + o
    assert current_slot(HOURLY, "alpha", at(2026, 3, 1, 10) + o - timedelta(microseconds=1)) == at(2026, 3, 1, 9) + o


def test_current_slot_converts_to_utc():
    o = offset(DAILY, "alpha")
    berlin_summer = timezone(timedelta(hours=2))
    now = (at(2026, 6, 1, 3) + o).astimezone(berlin_summer)
    slot = current_slot(DAILY, "alpha", now)
    assert slot == at(2026, 6, 1, 3) + o
    assert slot is not None and slot.utcoffset() == timedelta(0)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="naive"):
        current_slot(DAILY, "alpha", datetime(2026, 3, 1))


def test_next_run():
    o = offset(HOURLY, "alpha")
    assert o > timedelta(0)
    assert next_run(HOURLY, "alpha", at(2026, 3, 1, 10) + o) == at(2026, 3, 1, 11) + o
    # between the fire time and this instance's offset, this window's backup is still ahead
    assert next_run(HOURLY, "alpha", at(2026, 3, 1, 10)) == at(2026, 3, 1, 10) + o
    assert next_run(DAILY, "alpha", at(2026, 12, 31, 23, 59)) == at(2027, 1, 1, 3) + offset(DAILY, "alpha")


@settings(max_examples=200, deadline=None)
@given(
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)),
    expr=st.sampled_from([EVERY_MINUTE, HOURLY, DAILY, "*/25 * * * *", "30 4 * * 1", "0 0 29 2 *"]),
    name=st.text(min_size=1, max_size=20),
)
def test_slots_frame_now(now, expr, name):
    slot, upcoming = current_slot(expr, name, now), next_run(expr, name, now)
    assert slot is not None and slot <= now < upcoming
    assert current_slot(expr, name, upcoming) == upcoming
    assert current_slot(expr, name, upcoming - timedelta(microseconds=1)) == slot


# --- is_due --------------------------------------------------------------------------------------

def due(expr=DAILY, name="alpha", *, created=LONG_AGO, last_success=None, last_attempt=None, now):
    return is_due(expr, name, created=created, last_success=last_success, last_attempt=last_attempt, now=now)


SLOT = at(2026, 3, 2, 3) + offset(DAILY, "alpha")


def test_daily_backup_is_due_at_its_slot_and_not_before():
    previous = SLOT - timedelta(days=1)
    assert due(now=SLOT, last_success=previous, last_attempt=previous)
    assert not due(now=SLOT - timedelta(seconds=1), last_success=previous, last_attempt=previous)
    assert due(now=SLOT)  # never backed up


def test_one_backup_per_window_then_the_next_window_is_due_again():
    done = SLOT + timedelta(minutes=3)
    assert not due(now=SLOT + timedelta(hours=5), last_success=done, last_attempt=SLOT)
    assert not due(now=SLOT + timedelta(days=1) - timedelta(seconds=1), last_success=done, last_attempt=SLOT)
    assert due(now=SLOT + timedelta(days=1), last_success=done, last_attempt=SLOT)


def test_a_failed_backup_is_retried_every_retry_interval():
    failed = SLOT + timedelta(minutes=1)
    assert not due(now=failed + timedelta(minutes=14), last_attempt=failed, last_success=SLOT - timedelta(days=1))
    assert due(now=failed + timedelta(minutes=15), last_attempt=failed, last_success=SLOT - timedelta(days=1))
    assert not is_due(DAILY, "alpha", created=LONG_AGO, last_success=None, last_attempt=failed,
                      now=failed + timedelta(minutes=15), retry=timedelta(hours=1))
    # the retry succeeded: nothing more in this window
    assert not due(now=failed + timedelta(minutes=40), last_attempt=failed + timedelta(minutes=15),
                   last_success=failed + timedelta(minutes=20))


def test_an_instance_created_after_the_slot_waits_for_the_next_one():
    created = SLOT + timedelta(minutes=1)
    assert not due(created=created, now=SLOT + timedelta(hours=2))
    assert due(created=created, now=SLOT + timedelta(days=1))
    assert due(created=SLOT, now=SLOT)


def test_hourly_and_every_minute():
    o = offset(HOURLY, "beta")
    assert due(HOURLY, "beta", now=at(2026, 3, 2, 10) + o, last_success=at(2026, 3, 2, 9) + o)
    assert not due(HOURLY, "beta", now=at(2026, 3, 2, 10, 59, 59), last_success=at(2026, 3, 2, 10) + o)

    o = offset(EVERY_MINUTE, "beta")
    minute = at(2026, 3, 2, 10, 7)
    assert due(EVERY_MINUTE, "beta", now=minute + o, last_success=minute - timedelta(minutes=1) + o)
    assert not due(EVERY_MINUTE, "beta", now=minute + timedelta(seconds=59), last_success=minute + o)
    assert due(EVERY_MINUTE, "beta", now=minute + timedelta(minutes=1) + o, last_success=minute + o)


# --- retention -----------------------------------------------------------------------------------

# Tuesday 10 March 2026 is in ISO week 11; 2 to 8 March is week 10; 1 March (a Sunday) is in week 9.
SNAPSHOTS = [
    ("a", at(2026, 3, 10, 12)),
    ("b", at(2026, 3, 10, 6)),
    ("c", at(2026, 3, 9, 12)),
    ("d", at(2026, 3, 8, 12)),
    ("e", at(2026, 3, 2, 12)),
    ("f", at(2026, 3, 1, 12)),
    ("g", at(2026, 2, 20, 12)),
    ("h", at(2026, 2, 10, 12)),
]


def test_retention_by_hand():
    # daily: a (10th), c (9th); weekly: a (w11), d (w10); monthly: a (March), g (February)
    assert to_forget(SNAPSHOTS, Keep(daily=2, weekly=2, monthly=2)) == {"b", "e", "f", "h"}
    assert to_forget(list(reversed(SNAPSHOTS)), Keep(daily=2, weekly=2, monthly=2)) == {"b", "e", "f", "h"}


def test_retention_keeps_the_oldest_while_a_policy_has_counts_left():
    """Like restic: monthly=6 sees only two months, so it keeps the oldest snapshot (h) as well."""
    assert to_forget(SNAPSHOTS, Keep(daily=2, weekly=2, monthly=6)) == {"b", "e", "f"}
    same_day = [("x1", at(2026, 3, 10, 12)), ("x2", at(2026, 3, 10, 11)), ("x3", at(2026, 3, 10, 10))]
    assert to_forget(same_day, Keep(daily=7, weekly=0, monthly=0)) == {"x2"}
    assert to_forget(same_day, Keep(daily=1, weekly=0, monthly=0)) == {"x2", "x3"}


def test_retention_over_a_year_of_daily_snapshots():
    snapshots = [(day.date().isoformat(), day) for day in (at(2025, 1, 1, 2) + timedelta(days=i) for i in range(365))]
    kept = {s for s, _ in snapshots} - to_forget(snapshots, Keep())
    assert kept == {
        # 7 daily
        "2025-12-31", "2025-12-30", "2025-12-29", "2025-12-28", "2025-12-27", "2025-12-26", "2025-12-25",
        # 4 weekly: 2026-W01 (from Monday 29 December), W52, W51, W50, each by its newest day
        "2025-12-21", "2025-12-14",  # 31 and 28 December are kept already
        # 6 monthly: December (31st, kept already) back to July
        "2025-11-30", "2025-10-31", "2025-09-30", "2025-08-31", "2025-07-31",
    }


def test_retention_zeros_keep_only_the_newest():
    assert to_forget(SNAPSHOTS, Keep(0, 0, 0)) == {s for s, _ in SNAPSHOTS} - {"a"}
    assert to_forget([], Keep()) == set()
    assert to_forget([("only", at(2026, 1, 1))], Keep(0, 0, 0)) == set()


def test_retention_buckets_are_utc_days():
    # 00:30 on 10 March in +02:00 is 22:30 on 9 March in UTC: the same day as s2
    snapshots = [
        ("s1", datetime(2026, 3, 10, 0, 30, tzinfo=timezone(timedelta(hours=2)))),
        ("s2", at(2026, 3, 9, 12)),
        ("s3", at(2026, 3, 8, 12)),
    ]
    assert to_forget(snapshots, Keep(daily=2, weekly=0, monthly=0)) == {"s2"}


@pytest.mark.parametrize("bad", [{"daily": -1}, {"weekly": -3}, {"monthly": 1.5}, {"daily": True}])
def test_keep_refuses_negative_or_odd_counts(bad):
    with pytest.raises(InvalidInput, match="keep"):
        Keep(**bad)


snapshot_lists = st.lists(
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)),
    max_size=60,
).map(lambda times: [(f"id{i}", t) for i, t in enumerate(times)])
keeps = st.builds(Keep, daily=st.integers(0, 10), weekly=st.integers(0, 6), monthly=st.integers(0, 8))


@settings(max_examples=300, deadline=None)
@given(snapshots=snapshot_lists, keep=keeps)
def test_retention_properties(snapshots, keep):
    forgotten = to_forget(snapshots, keep)
    ids = {s for s, _ in snapshots}
    assert forgotten <= ids
    if snapshots:
        newest = max(snapshots, key=lambda s: s[1])[1]
        assert any(s not in forgotten and t == newest for s, t in snapshots)
        kept = ids - forgotten
        days = {t.date() for _, t in snapshots}
        assert len(kept) >= min(keep.daily, len(days))
        assert len(kept) <= max(1, keep.daily + keep.weekly + keep.monthly + 3)  # at most one oldest per policy


# --- fingerprint ---------------------------------------------------------------------------------

BACKUP = {
    "tables": {"motions_motion": 12, "agenda_item": 4, "gone_table": None},
    "schema": "motions.0042",
    "volumes": {"media": {"files": 3, "bytes": 12345, "sha256": "aa"}},
}


def restored(**changes):
    fingerprint = {
        "tables": dict(BACKUP["tables"], extra_table=99),
        "schema": BACKUP["schema"],
        "volumes": {"media": dict(BACKUP["volumes"]["media"]), "other": {"files": 1, "bytes": 1, "sha256": "b"}},
    }
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = fingerprint
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[leaf]
        else:
            target[leaf] = value
    return fingerprint


def test_equal_fingerprints_have_no_differences():
    assert compare(BACKUP, restored()) == []


@pytest.mark.parametrize(("changes", "message"), [
    ({"tables__motions_motion": 11}, "table motions_motion: 12 rows in the backup, 11 restored"),
    ({"tables__motions_motion": KeyError}, "table motions_motion: missing after the restore"),
    ({"tables__agenda_item": None}, "table agenda_item: missing after the restore"),
    ({"tables__gone_table": 5}, "table gone_table: missing in the backup, 5 restored"),
    ({"schema": "motions.0041"}, 'schema: backup at "motions.0042", restored "motions.0041"'),
    ({"schema": KeyError}, "schema: missing after the restore"),
    ({"volumes__media__files": 2, "volumes__media__bytes": 8192},
     "volume media: 3 files (12.1 KB) in the backup, 2 files (8.0 KB) restored"),
    ({"volumes__media__files": 1}, "volume media: 3 files (12.1 KB) in the backup, 1 file (12.1 KB) restored"),
    ({"volumes__media__sha256": "bb"}, "volume media: same number and size of files, different content"),
    ({"volumes__media": KeyError}, "volume media: missing after the restore"),
])
def test_each_difference_in_one_line(changes, message):
    assert compare(BACKUP, restored(**changes)) == [message]


def test_missing_sections_and_several_differences():
    assert compare(BACKUP, {}) == [
        "table agenda_item: missing after the restore",
        "table motions_motion: missing after the restore",
        "schema: missing after the restore",
        "volume media: missing after the restore",
    ]
    assert compare({"tables": {"t": 1}}, {"tables": {"t": 1}}) == []


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KB"), (12345, "12.1 KB"), (8192, "8.0 KB"),
    (1024**2 - 1, "1.0 MB"), (5 * 1024**2 + 1024**2 // 2, "5.5 MB"), (1024**3, "1.0 GB"), (3 * 1024**4, "3.0 TB"),
    (2048 * 1024**5, "2048.0 PB"),
])
def test_human_bytes(n, text):
    assert human_bytes(n) == text


def test_human_bytes_refuses_negative_sizes():
    with pytest.raises(ValueError, match="negative"):
        human_bytes(-1)
