"""Checks of user input, before anything is written or created."""

import re
from datetime import UTC, datetime

from hafen.access.policy import LOCKABLE
from hafen.catalog import SIZES, App, get_app
from hafen.edge.config import HOST_PATTERN
from hafen.errors import InvalidInput
from hafen.instances import naming

_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_REPLICAS = 32
# Names the web UI uses in its instance URLs.
RESERVED = frozenset({"new"})


def name(value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or "--" in value:
        raise InvalidInput(
            f"invalid name {value!r}: use 3 to 32 lowercase letters, digits and single hyphens, "
            "starting with a letter and not ending with a hyphen"
        )
    if value in RESERVED:
        raise InvalidInput(f"the name {value!r} is reserved; choose another")
    return value


def domain(value: str, prefix: str = "hafen") -> str:
    """A host name the edge will route: the proxy's guard (HOST_PATTERN) takes it, and its alias on the
    instance's edge network (the domain under the route suffix) is a valid DNS name."""
    value = value.strip().lower().rstrip(".")
    labels = value.split(".")
    alias = naming.edge_alias(prefix, value)
    if len(alias) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidInput(f"invalid domain {value!r}: use a host name such as event.example.org")
    if not re.fullmatch(HOST_PATTERN, value):
        raise InvalidInput(f"invalid domain {value!r}: its last label must start with a letter")
    return value


def app_version(app_name: str, version: str | None) -> tuple[App, str]:
    app = get_app(app_name)
    chosen = version or app.default_version
    if chosen not in app.versions:
        raise InvalidInput(f"unknown version {chosen!r} of {app.name}; versions: {', '.join(app.versions)}")
    return app, chosen


def size(value: str) -> str:
    if value not in SIZES:
        raise InvalidInput(f"unknown size {value!r}; sizes: {', '.join(SIZES)}")
    return value


def replicas(value: int) -> int:
    if not 0 <= value <= MAX_REPLICAS:
        raise InvalidInput(f"replicas must be between 0 and {MAX_REPLICAS}, not {value}")
    return value


def lock_actions(values: list[str]) -> list[str]:
    known = [str(action) for action in LOCKABLE]
    unknown = [value for value in values if value not in known]
    if unknown or not values:
        raise InvalidInput(f"a lock refuses one or more of {', '.join(known)}; not {', '.join(unknown) or 'nothing'}")
    return [action for action in known if action in values]


def reason(value: str) -> str:
    value = " ".join(value.split())
    if not 3 <= len(value) <= 200:
        raise InvalidInput("give the lock a reason of 3 to 200 characters")
    return value


def moment(value: datetime | str, what: str) -> datetime:
    """An ISO time with its zone, or without one read as UTC (a datetime passes through), in UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput(f"{what}: an ISO time such as 2026-12-01T09:00 (UTC) or 2026-12-01T09:00+01:00, "
                               f"not {value!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidInput(f"{what}: {value.isoformat()} is out of range") from None
