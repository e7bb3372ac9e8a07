"""Template filters of the UI."""

from __future__ import annotations

from datetime import datetime

from django import template

register = template.Library()


@register.filter
def when(value: str | datetime | None) -> str:
    """A time, as the service layer gives it (ISO text or datetime), to the second, in UTC."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S")
