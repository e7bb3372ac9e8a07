"""Template filters of the UI."""

from __future__ import annotations

from datetime import datetime

from django import template

from hafen.backup.fingerprint import human_bytes

register = template.Library()


@register.filter
def when(value: str | datetime | None) -> str:
    """A time, as the service layer gives it (ISO text or datetime), to the second, in UTC."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@register.filter
def size(value: int | None) -> str:
    """A number of bytes as people read it ("50.0 MB"); a dash when not known yet."""
    return "—" if value is None else human_bytes(value)


@register.filter
def labels(value: dict[str, str] | None) -> list[str]:
    """Labels as KEY=VALUE, sorted (a template's `.items` would look up a label called "items" instead)."""
    return [f"{key}={text}" for key, text in sorted((value or {}).items())]


@register.filter
def counts(value: dict[str, int] | None) -> list[tuple[str, int]]:
    """A rollout's instances per state, as (state, number), sorted by state."""
    return sorted((value or {}).items())
