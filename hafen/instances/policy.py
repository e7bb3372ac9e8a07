"""The elastic-capacity policy of an instance, and the sleep decisions taken from it.

A policy key an instance does not set comes from its organisation, then from its size (the app's
`app.toml`), then from the installation's settings. Durations are stored in seconds, None meaning
never. The decisions are pure functions of the policy and of what the edge saw, so that the unit tier
checks them without a clock or an engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from pytimeparse2 import parse as parse_timespan

from hafen.catalog import App, get_app
from hafen.config import Settings
from hafen.edge.config import HOLD_STEPS
from hafen.errors import InvalidInput
from hafen.instances.models import Instance, Sleep

DURATIONS = ("idle", "deep_sleep")
# how long the edge holds a request to a sleeping instance (GET or HEAD) until it answers, instead of the
# waking page at once; off (None) or one of the proxy's steps (each step is one route of its static
# configuration: see edge.config.HOLD_STEPS)
HOLD = "hold"
# autoscaling: web replicas between min and max (max "off": no autoscaling), aiming at a target per replica
COUNTS = ("min", "max", "target_inflight", "target_cpu")
KEYS = (*DURATIONS, HOLD, *COUNTS)
LIMITS = {"min": (1, 32), "max": (1, 32), "target_inflight": (1, 10_000), "target_cpu": (5, 100)}
NEVER = "never"
OFF = "off"
MIN_IDLE = 10  # seconds: shorter would put an instance to sleep between two clicks
MAX_DURATION = 366 * 86400


def parse_duration(text: str, what: str = "duration") -> int | None:
    """'never' is None; '20s', '30m', '24h', '2d', '1h30m' are seconds."""
    value = text.strip().lower()
    if value == NEVER:
        return None
    seconds = parse_timespan(value) if value else None
    if seconds is None or isinstance(seconds, bool):
        raise InvalidInput(f"{what}: not a duration: {text!r} (use e.g. 20s, 30m, 24h or never)")
    seconds = int(seconds)
    if not MIN_IDLE <= seconds <= MAX_DURATION:
        raise InvalidInput(f"{what}: {text} is out of range ({MIN_IDLE}s to 366d, or never)")
    return seconds


def parse_hold(text: str, what: str = "hold") -> int | None:
    """'off' is None; else one of the edge's steps (5s, 10s, 20s, 30s, 60s) in seconds."""
    value = text.strip().lower()
    steps = ", ".join(f"{step}s" for step in HOLD_STEPS)
    if value == OFF:
        return None
    seconds = parse_timespan(value) if value else None
    if seconds is None or isinstance(seconds, bool) or int(seconds) not in HOLD_STEPS:
        raise InvalidInput(f"{what}: off or one of {steps}, not {text!r}")
    return int(seconds)


def parse(key: str, text: str, what: str = "") -> int | None:
    what = what or key.replace("_", "-")
    if key in DURATIONS:
        return parse_duration(text, what)
    if key == HOLD:
        return parse_hold(text, what)
    return parse_count(key, text)


def parse_count(key: str, text: str) -> int | None:
    """A whole number within the key's limits; for max, 'off' (None) too."""
    value = text.strip().lower().removesuffix("%")
    if key == "max" and value == OFF:
        return None
    low, high = LIMITS[key]
    what = key.replace("_", "-")
    if not value.isdigit() or not low <= int(value) <= high:
        hint = ", or off" if key == "max" else ""
        raise InvalidInput(f"{what}: a whole number from {low} to {high}{hint}, not {text!r}")
    return int(value)


def format_duration(seconds: int | None) -> str:
    if seconds is None:
        return NEVER
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)


def shown(key: str, value: int | None) -> str:
    if key in DURATIONS:
        return format_duration(value)
    if value is None:
        return OFF
    if key == HOLD:
        return format_duration(value)
    return f"{value}%" if key == "target_cpu" else str(value)


@dataclass(frozen=True)
class Policy:
    idle: int | None
    deep_sleep: int | None
    # where each key came from: instance, organisation, size or installation
    sources: dict[str, str]
    hold: int | None = None  # None: off
    min: int = 1
    max: int | None = None  # None: no autoscaling
    target_inflight: int = 10
    target_cpu: int = 70

    @property
    def deep_after(self) -> int | None:
        """Seconds without a request before deep sleep (never sooner than sleep itself)."""
        if self.idle is None or self.deep_sleep is None:
            return None
        return max(self.idle, self.deep_sleep)

    @property
    def autoscaled(self) -> bool:
        return self.max is not None

    def describe(self) -> dict[str, Any]:
        timed = (*DURATIONS, HOLD)
        return {key: {"value": shown(key, getattr(self, key)),
                      "seconds": getattr(self, key) if key in timed else None,
                      "number": None if key in timed else getattr(self, key),
                      "source": self.sources[key]} for key in KEYS}


def _layer(values: dict[str, Any], key: str) -> tuple[bool, int | None]:
    if key not in values:
        return False, None
    value = values[key]
    return True, (None if value is None else int(value))


def _parsed(values: dict[str, str], where: str) -> dict[str, int | None]:
    return {k: parse(k, v, f"{where} {k}") for k, v in values.items()}


@cache
def _size_values(app_name: str, size_name: str) -> dict[str, int | None]:
    """A size's defaults from app.toml, parsed once (the controller asks for every instance on every pass)."""
    size = get_app(app_name).sizes.get(size_name)
    return _parsed(size.policy if size else {}, f"{app_name} size {size_name}")


@cache
def _installation(idle: str, deep_sleep: str, hold: str, target_inflight: int, target_cpu: int
                  ) -> dict[str, int | None]:
    return {"idle": parse_duration(idle, "HAFEN_IDLE"), "deep_sleep": parse_duration(deep_sleep, "HAFEN_DEEP_SLEEP"),
            "hold": parse_hold(hold, "HAFEN_WAKE_HOLD"), "min": 1, "max": None, "target_inflight": target_inflight,
            "target_cpu": target_cpu}


def effective(instance: Instance, settings: Settings) -> Policy:
    size_values = _size_values(instance.app, instance.size)
    installation = _installation(settings.idle, settings.deep_sleep, settings.wake_hold, settings.target_inflight,
                                 settings.target_cpu)
    organisation = instance.organisation.policy if instance.organisation else {}
    layers = (("instance", instance.policy), ("organisation", organisation), ("size", size_values),
              ("installation", installation))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        for source, layer in layers:
            found, value = _layer(layer, key)
            if found:
                values[key], sources[key] = value, source
                break
    return Policy(sources=sources, **values)


def changes(given: dict[str, str]) -> dict[str, int | None]:
    """The keys a user sets, parsed; 'default' takes the instance's own value away (see `removed`)."""
    found: dict[str, int | None] = {}
    for key, text in given.items():
        if key not in KEYS:
            raise InvalidInput(f"no policy key {key!r}; keys: {', '.join(KEYS)}")
        if text.strip().lower() != "default":
            found[key] = parse(key, text)
    return found


def removed(given: dict[str, str]) -> list[str]:
    return [key for key, text in given.items() if text.strip().lower() == "default"]


def check(policy: Policy) -> None:
    """A policy whose autoscaling range is empty is refused."""
    if policy.max is not None and policy.max < policy.min:
        raise InvalidInput(f"max ({policy.max}) is below min ({policy.min})")


# -- decisions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    action: str  # sleep, deep-sleep or wake
    reason: str
    numbers: dict[str, Any]


def sleep_decision(policy: Policy, sleep: str, last_active: datetime, in_flight: int, now: datetime
                   ) -> Decision | None:
    """Whether an awake (or lightly sleeping) instance should go (deeper) to sleep now."""
    idle_for = (now - last_active).total_seconds()
    numbers = {"idle_s": round(idle_for, 1), "in_flight": in_flight, "idle_limit_s": policy.idle,
               "deep_limit_s": policy.deep_after, "last_request": last_active.isoformat()}
    if in_flight > 0 or policy.idle is None:
        return None
    deep = policy.deep_after
    if sleep != Sleep.DEEP and deep is not None and idle_for >= deep:
        return Decision("deep-sleep", f"no request for {format_duration(int(idle_for))} "
                                      f"(deep sleep after {format_duration(deep)})", numbers)
    if sleep == Sleep.AWAKE and idle_for >= policy.idle:
        return Decision("sleep", f"no request for {format_duration(int(idle_for))} "
                                 f"(sleeps after {format_duration(policy.idle)})", numbers)
    return None


def wake_decision(sleep: str, slept_at: datetime | None, last_request: datetime | None) -> Decision | None:
    """A sleeping instance wakes on a request that came after it fell asleep."""
    if sleep == Sleep.AWAKE or slept_at is None or last_request is None or last_request <= slept_at:
        return None
    return Decision("wake", "a request came in", {"request_at": last_request.isoformat(),
                                                   "slept_at": slept_at.isoformat()})


# -- events --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Floor:
    """What an instance's events ask for now: at least `replicas` web replicas, and no sleep."""

    replicas: int
    event_id: int | None
    reason: str
    size: str = ""  # the size whose limits the services get meanwhile ("": the instance's own)


def limits_size(instance: Instance) -> str:
    """The size whose memory and CPU limits the instance's services have now: its own, or the larger one an
    event in its window asks for (see event_floor)."""
    return get_app(instance.app).larger_size(instance.size, instance.floor_size)


def event_floor(app: App, events: list[Any], now: datetime, lead: int) -> Floor:
    """The floor of the events whose window (from `lead` seconds before its start to its end) holds now;
    the largest if several do. `events` have start_at, end_at, participants, title and pk."""
    best: Floor = Floor(0, None, "")
    best_participants = 0
    for event in events:
        if event.start_at - timedelta(seconds=lead) <= now < event.end_at:
            row = app.row_for(event.participants)
            if (row.web_replicas, event.participants) > (best.replicas, best_participants):
                best_participants = event.participants
                what = f"event {event.title!r}" if event.title else "an event"
                limits = f", the limits of size {row.size} at least" if row.size else ""
                best = Floor(row.web_replicas, event.pk,
                             f"{what} for {event.participants} participants, {event.start_at:%Y-%m-%d %H:%M} to "
                             f"{event.end_at:%H:%M} UTC: {row.web_replicas} web replica"
                             f"{'s' if row.web_replicas > 1 else ''}{limits}", row.size)
    return best
