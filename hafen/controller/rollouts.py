"""Running fleet rollouts (see instances/rollouts.py for how one is planned).

Each pass: a scheduled rollout whose time has come starts; the updates under way are followed; once
every instance of the current wave is updated (or skipped), the next wave's updates start, each only
inside its organisation's update window. The first failed update (it rolled back by itself) ends the
rollout, and the instances not yet started are left as they are. A paused rollout starts nothing new.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from hafen.access.policy import Actor
from hafen.backup import schedule
from hafen.config import get_settings
from hafen.errors import Conflict, Forbidden, HafenError, Locked, NotFound
from hafen.instances import rollouts, updates
from hafen.instances.models import Event, ItemState, Operation, OpState, Rollout, RolloutItem, RolloutState
from hafen.instances.policy import parse_duration

log = logging.getLogger("hafen.rollouts")

_OUTCOME = {OpState.SUCCEEDED: ItemState.UPDATED, OpState.ROLLED_BACK: ItemState.ROLLED_BACK,
            OpState.FAILED: ItemState.FAILED, OpState.SUPERSEDED: ItemState.FAILED}


def _actor(rollout: Rollout) -> Actor:
    return Actor(via="system", source="controller", local_name=f"rollout {rollout.pk}")


class RolloutRunner:
    def pass_once(self) -> bool:
        """Advance every rollout that is not finished; return whether an update was started."""
        now = timezone.now()
        started = False
        # updates still under way when their rollout ended (cancelled, or failed beside them in a wave)
        for ended in Rollout.objects.exclude(state__in=rollouts.ACTIVE).filter(items__state=ItemState.UPDATING) \
                .distinct():
            self._follow(ended)
        for rollout in Rollout.objects.filter(state__in=rollouts.ACTIVE).order_by("created_at", "id"):
            if rollout.state == RolloutState.SCHEDULED and rollout.start_at <= now:
                Rollout.objects.filter(pk=rollout.pk, state=RolloutState.SCHEDULED).update(
                    state=RolloutState.RUNNING, started_at=now)
                rollout.refresh_from_db()
                log.info("rollout %s of %s %s: started", rollout.pk, rollout.app, rollout.version)
            if rollout.state == RolloutState.SCHEDULED:
                continue
            started = self._advance(rollout) or started
        return started

    def _follow(self, rollout: Rollout) -> list[RolloutItem]:
        """The updates under way: the finished ones recorded; return those that failed."""
        failed = []
        for item in rollout.items.filter(state=ItemState.UPDATING).select_related("operation", "instance"):
            op: Operation | None = item.operation
            if op is None or not op.done:
                continue
            item.state = _OUTCOME.get(OpState(op.state), ItemState.FAILED)
            item.version = item.instance.version if item.instance else item.version
            item.message = op.error
            item.save(update_fields=["state", "version", "message"])
            if item.state != ItemState.UPDATED:
                failed.append(item)
        return failed

    def _advance(self, rollout: Rollout) -> bool:
        failed = self._follow(rollout)
        with transaction.atomic():
            rollout = Rollout.objects.select_for_update().get(pk=rollout.pk)
            if rollout.state not in rollouts.ACTIVE:
                return False
            if failed or rollout.items.filter(state__in=(ItemState.ROLLED_BACK, ItemState.FAILED)).exists():
                self._end(rollout, RolloutState.FAILED, failed)
                return False
            if rollout.state == RolloutState.PAUSED:
                return False
            open_items = rollout.items.exclude(state__in=rollouts.FINAL_ITEMS)
            if not open_items.exists():
                self._end(rollout, RolloutState.SUCCEEDED, [])
                return False
            wave = min(item.wave for item in open_items)
            current = list(open_items.filter(wave=wave).select_related("organisation"))
            started = [self._start(rollout, item) for item in current if item.state == ItemState.PENDING]
            return any(started)

    def _start(self, rollout: Rollout, item: RolloutItem) -> bool:
        cron, minutes = rollouts.window_of(item.organisation)
        now = timezone.now()
        if cron and not schedule.window_open(cron, minutes, now):
            opens = schedule.next_window(cron, now)
            message = f"waits for the update window of {item.organisation} (opens {opens:%Y-%m-%d %H:%M} UTC)"
            if item.message != message:
                item.message = message
                item.save(update_fields=["message"])
            return False
        event = _event_now(item.instance_name, now)
        if event is not None:
            item.state = ItemState.SKIPPED
            item.message = (f"an event is in progress or about to begin ({event.title or 'event'}, "
                            f"{event.start_at:%Y-%m-%d %H:%M} to {event.end_at:%Y-%m-%d %H:%M} UTC)")
            item.save(update_fields=["state", "message"])
            log.info("rollout %s: %s skipped: %s", rollout.pk, item.instance_name, item.message)
            return True
        try:
            op = updates.update(_actor(rollout), item.instance_name, rollout.version)
        except (Conflict, Locked, NotFound, Forbidden) as exc:
            item.state, item.message = ItemState.SKIPPED, str(exc)
            item.save(update_fields=["state", "message"])
            log.info("rollout %s: %s skipped: %s", rollout.pk, item.instance_name, exc)
            return True
        except HafenError as exc:  # an image gone, say: the rollout cannot go on
            item.state, item.message = ItemState.FAILED, str(exc)
            item.save(update_fields=["state", "message"])
            return True
        item.state, item.operation, item.message = ItemState.UPDATING, op, ""
        item.save(update_fields=["state", "operation", "message"])
        log.info("rollout %s: updating %s (%s)", rollout.pk, item.instance_name, "canary" if item.canary else
                 f"wave {item.wave}")
        return True

    def _end(self, rollout: Rollout, state: RolloutState, failed: list[RolloutItem]) -> None:
        if state == RolloutState.FAILED:
            first = failed[0] if failed else rollout.items.filter(
                state__in=(ItemState.ROLLED_BACK, ItemState.FAILED)).first()
            rollout.error = f"{first.instance_name}: {first.message}" if first else "an update failed"
            rollout.items.filter(state=ItemState.PENDING).update(
                state=ItemState.NOT_TOUCHED, message="the rollout stopped at the first failed update")
        rollout.state = state
        rollout.finished_at = timezone.now()
        rollout.save(update_fields=["state", "error", "finished_at"])
        log.info("rollout %s of %s %s: %s%s", rollout.pk, rollout.app, rollout.version, state,
                 f" ({rollout.error})" if rollout.error else "")


def _event_now(name: str, now: datetime) -> Event | None:
    """An event of the instance in its window (from HAFEN_EVENT_LEAD before its start to its end)."""
    lead = parse_duration(get_settings().event_lead, "HAFEN_EVENT_LEAD") or 0
    return Event.objects.filter(instance__name=name, start_at__lte=now + timedelta(seconds=lead),
                                end_at__gt=now).order_by("start_at").first()
