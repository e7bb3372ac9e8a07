from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """The moment in UTC; a naive datetime is a programming error here, not local time."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: backups need timezone-aware datetimes")
    return moment.astimezone(UTC)
