"""The CLI on the host of the control plane: the service layer itself, acting as the local operator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from hafen.access import audit
from hafen.access import services as access
from hafen.access.policy import Actor
from hafen.backends import OnUpdate
from hafen.errors import InvalidInput
from hafen.instances import backups, calendar, elastic, mail, nodes, organisations, rollouts, services, updates
from hafen.logs import services as logs

ROLLOUT_CONTROLS = {"pause": rollouts.pause, "resume": rollouts.resume, "cancel": rollouts.cancel}


def summary(rollout: dict[str, Any]) -> dict[str, Any]:
    """A rollout as lists show it: without its instances."""
    return {key: value for key, value in rollout.items() if key != "items"}


class LocalBackend:
    def __init__(self) -> None:
        self.actor = Actor.local()

    def create(self, name: str, app: str, version: str | None, domain: str | None, size: str,
               organisation: str | None) -> dict[str, Any]:
        op = services.create_instance(self.actor, name, app, version=version, domain=domain, size=size,
                                      organisation=organisation)
        return services.describe_operation(op)

    def instances(self, **filters: str) -> list[dict[str, Any]]:
        return backups.describe_all(list(services.list_instances(self.actor, **filters)))

    def show(self, name: str) -> dict[str, Any]:
        return services.detail(self.actor, services.get_instance(self.actor, name))

    def credentials(self, name: str) -> dict[str, str]:
        creds = services.credentials(self.actor, name)
        return {"username": creds.username, "password": creds.password}

    def act(self, action: str, name: str) -> dict[str, Any]:
        return services.describe_operation(getattr(services, action)(self.actor, name))

    def erase(self, name: str) -> dict[str, Any]:
        return services.describe_operation(services.erase(self.actor, name))

    def scale(self, name: str, replicas: int) -> dict[str, Any]:
        return services.describe_operation(services.scale(self.actor, name, replicas))

    def passwd(self, name: str) -> tuple[dict[str, Any], str]:
        op, password = services.new_admin_password(self.actor, name)
        return services.describe_operation(op), password

    def logs(self, name: str, service: str | None, follow: bool, since: int | None,
             tail: int | None) -> Iterator[str]:
        return services.logs(self.actor, name, service, follow=follow, since=since, tail=tail)

    def search_logs(self, **filters: Any) -> list[dict[str, Any]]:
        return logs.search(self.actor, **filters)

    def errors(self, instance: str = "") -> list[dict[str, Any]]:
        return [logs.describe_group(g) for g in logs.error_groups(self.actor, instance)]

    def wait(self, operation: dict[str, Any], on_update: OnUpdate, timeout: float = 900) -> dict[str, Any]:
        op = services.get_operation(self.actor, operation["id"])
        return services.describe_operation(
            services.wait(op, lambda o: on_update(services.describe_operation(o)), timeout=timeout)
        )

    def lock(self, name: str, actions: list[str], reason: str) -> dict[str, Any]:
        return services.describe_lock(services.lock(self.actor, name, actions, reason))

    def unlock(self, name: str, lock_id: int) -> None:
        services.unlock(self.actor, name, lock_id)

    def audit(self, **filters: str) -> list[dict[str, Any]]:
        return [audit.describe(e) for e in audit.search(self.actor, **filters)[:100]]

    def backup(self, name: str) -> dict[str, Any]:
        return services.describe_operation(backups.backup(self.actor, name))

    def backups(self, name: str) -> dict[str, Any]:
        return backups.listing(self.actor, name)

    def restore(self, name: str, snapshot: str, into: str | None = None, domain: str | None = None,
                organisation: str | None = None) -> dict[str, Any]:
        if into:
            op = backups.restore_into(self.actor, name, snapshot, into, domain=domain, organisation=organisation)
        else:
            op = backups.restore(self.actor, name, snapshot)
        return services.describe_operation(op)

    def clone(self, name: str, new: str, domain: str | None, organisation: str | None) -> dict[str, Any]:
        return services.describe_operation(backups.clone(self.actor, name, new, domain, organisation))

    def update(self, name: str, version: str | None, restore: str | None) -> dict[str, Any]:
        return services.describe_operation(updates.update(self.actor, name, version, restore))

    def verify(self, name: str, snapshot: str) -> dict[str, Any]:
        return services.describe_operation(backups.verify(self.actor, name, snapshot))

    def backup_policy(self, name: str | None, organisation: str | None, changes: dict[str, Any]) -> dict[str, Any]:
        if changes:
            return backups.set_policy(self.actor, name=name, organisation=organisation, **changes).describe(name)
        return backups.get_policy(self.actor, name=name, organisation=organisation)

    def repository(self, check: bool) -> dict[str, Any]:
        if check:
            backups.request_maintenance(self.actor)
        return backups.repository(self.actor)

    def nodes(self) -> list[dict[str, Any]]:
        return nodes.list_nodes(self.actor)

    def mail_status(self) -> dict[str, Any]:
        return mail.status(self.actor)

    def mail_test(self, address: str) -> dict[str, Any]:
        return mail.send_test(self.actor, address)

    def node_join(self) -> dict[str, Any]:
        return nodes.join_command(self.actor)

    def node_label(self, node: str, changes: list[str]) -> dict[str, Any]:
        return nodes.label(self.actor, node, changes)

    def node_drain(self, node: str) -> dict[str, Any]:
        return nodes.drain(self.actor, node)

    def node_activate(self, node: str) -> dict[str, Any]:
        return nodes.activate(self.actor, node)

    def node_evacuation(self, node: str) -> dict[str, Any]:
        return nodes.evacuation_plan(self.actor, node)

    def node_evacuate(self, node: str, confirm: str) -> dict[str, Any]:
        return nodes.evacuate(self.actor, node, confirm=confirm)

    def node_remove(self, node: str, force: bool) -> None:
        nodes.remove(self.actor, node, force=force)

    def rollout_create(self, app: str, version: str, organisation: str | None, canary: int, canaries: list[str],
                       batch: int, start_at: datetime | None) -> dict[str, Any]:
        rollout = rollouts.create(self.actor, app, version, organisation=organisation, canary=canary,
                                  canaries=canaries, batch=batch, start_at=start_at)
        return rollouts.describe(rollout)

    def rollouts(self) -> list[dict[str, Any]]:
        return [summary(rollouts.describe(r)) for r in rollouts.listing(self.actor)]

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        return rollouts.describe(rollouts.get(self.actor, rollout_id))

    def rollout_control(self, rollout_id: int, action: str) -> dict[str, Any]:
        control = ROLLOUT_CONTROLS.get(action)
        if control is None:
            raise InvalidInput(f"a rollout is paused, resumed or cancelled, not {action!r}")
        return rollouts.describe(control(self.actor, rollout_id))

    def policy(self, name: str, changes: dict[str, str]) -> dict[str, Any]:
        if not changes:
            return elastic.show_policy(self.actor, name)
        return elastic.set_policy(self.actor, name, **changes)

    def org_policy(self, slug: str, changes: dict[str, str]) -> dict[str, Any]:
        if not changes:
            return elastic.show_organisation_policy(self.actor, slug)
        return elastic.set_organisation_policy(self.actor, slug, **changes)

    def events(self, name: str | None) -> list[dict[str, Any]]:
        return [calendar.describe(e) for e in calendar.coming(self.actor, name)]

    def event_add(self, name: str, start: str, end: str, participants: int, title: str) -> dict[str, Any]:
        return calendar.describe(calendar.add(self.actor, name, start=start, end=end, participants=participants,
                                              title=title))

    def event_remove(self, name: str, event_id: int) -> None:
        calendar.remove(self.actor, name, event_id)

    def org_webhook(self, slug: str, url: str) -> dict[str, Any]:
        return organisations.describe(access.set_alert_webhook(self.actor, slug, url))

    def org_window(self, slug: str, cron: str, minutes: int) -> dict[str, Any]:
        return organisations.describe(rollouts.set_window(self.actor, slug, cron, minutes))
