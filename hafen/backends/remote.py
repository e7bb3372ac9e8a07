"""The CLI against a control plane elsewhere, through its REST API with a token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx

from hafen.backends import OnUpdate
from hafen.errors import ControlPlaneDown, InvalidInput, StillRunning, from_status


class RemoteBackend:
    def __init__(self, url: str, token: str, timeout: float = 30,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"--url must start with http:// or https://, not {url!r}")
        if not token:
            raise InvalidInput("a remote control plane needs a token: --token or HAFEN_TOKEN")
        self.url = url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
            transport=transport or httpx.HTTPTransport(retries=2),
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ControlPlaneDown(f"cannot reach {self.client.base_url}: {exc}") from None
        if response.status_code >= 400:
            code: str | None = None
            try:
                error = response.json()["error"]
                message, code = error["message"], error.get("code")
            except (ValueError, KeyError, TypeError, AttributeError):
                message = f"HTTP {response.status_code} from {response.url}"
            raise from_status(response.status_code, code)(message)
        return response.json() if response.content else None

    def create(self, name: str, app: str, version: str | None, domain: str | None, size: str,
               organisation: str | None) -> dict[str, Any]:
        body = {"name": name, "app": app, "version": version, "domain": domain, "size": size,
                "organisation": organisation}
        result: dict[str, Any] = self._call("POST", "/instances", json=body)
        return result

    def instances(self, **filters: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self._call("GET", "/instances", params={**filters, "page": page, "per_page": 500})
            items.extend(data["items"])
            if len(items) >= data["count"] or not data["items"]:
                return items
            page += 1

    def show(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/instances/{name}")
        return result

    def credentials(self, name: str) -> dict[str, str]:
        result: dict[str, str] = self._call("GET", f"/instances/{name}/credentials")
        return result

    def act(self, action: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/instances/{name}/{action}")
        return result

    def erase(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/instances/{name}/erase", json={"confirm": name})
        return result

    def scale(self, name: str, replicas: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/instances/{name}/scale", json={"replicas": replicas})
        return result

    def passwd(self, name: str) -> tuple[dict[str, Any], str]:
        data = self._call("POST", f"/instances/{name}/password")
        return data["operation"], data["password"]

    def logs(self, name: str, service: str | None, follow: bool, since: int | None,
             tail: int | None) -> Iterator[str]:
        if follow:
            raise InvalidInput("--follow needs the control plane's host; remotely, use --tail and --since")
        params: dict[str, Any] = {"tail": tail or 1000}
        if service:
            params["service"] = service
        if since is not None:
            params["since"] = since
        yield from self._call("GET", f"/instances/{name}/logs", params=params)["lines"]

    def search_logs(self, **filters: Any) -> list[dict[str, Any]]:
        params = {key: value for key, value in filters.items() if value not in (None, "", 0)}
        lines: list[dict[str, Any]] = self._call("GET", "/logs", params=params)["lines"]
        return lines

    def errors(self, instance: str = "") -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._call("GET", "/errors", params={"instance": instance} if instance else {})
        return groups

    def wait(self, operation: dict[str, Any], on_update: OnUpdate, timeout: float = 900) -> dict[str, Any]:
        started = time.monotonic()
        seen: Any = None
        while True:
            operation = self._call("GET", f"/operations/{operation['id']}")
            snapshot = (operation["state"], operation["steps"], operation["error"])
            if snapshot != seen:
                on_update(operation)
            seen = snapshot
            if operation["state"] not in ("pending", "running"):
                return operation
            waited = time.monotonic() - started
            if waited > timeout:
                if not self._controller_running():
                    raise ControlPlaneDown(f"the controller of {self.url} is not running: operation "
                                           f"{operation['kind']} of {operation['instance']} does not advance")
                step = next((s["title"] for s in operation["steps"] if s["state"] != "done"), None)
                # The CLI's own clock: the server's may differ, and the CLI asked for the operation just before.
                raise StillRunning.of(operation["kind"], operation["instance"], step, waited)
            time.sleep(0.5)

    def _controller_running(self) -> bool:
        """The control plane's own view of its controller's heartbeat; True if it cannot tell."""
        try:
            response = self.client.get(f"{self.url}/healthz")
            return bool(response.json()["controller"].get("running", True))
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
            return True

    def lock(self, name: str, actions: list[str], reason: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/instances/{name}/locks",
                                            json={"actions": actions, "reason": reason})
        return result

    def unlock(self, name: str, lock_id: int) -> None:
        self._call("DELETE", f"/instances/{name}/locks/{lock_id}")

    def audit(self, **filters: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call("GET", "/audit", params={**filters, "per_page": 100})["items"]
        return items

    def backup(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/instances/{name}/backups")
        return result

    def backups(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/instances/{name}/backups")
        return result

    def restore(self, name: str, snapshot: str, into: str | None = None, domain: str | None = None,
                organisation: str | None = None) -> dict[str, Any]:
        body = {"snapshot": snapshot, "into": into, "domain": domain, "organisation": organisation,
                "confirm": None if into else name}
        result: dict[str, Any] = self._call("POST", f"/instances/{name}/restore", json=body)
        return result

    def update(self, name: str, version: str | None, restore: str | None) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/instances/{name}/update",
                                            json={"version": version, "restore": restore})
        return result

    def clone(self, name: str, new: str, domain: str | None, organisation: str | None) -> dict[str, Any]:
        body = {"name": new, "domain": domain, "organisation": organisation}
        result: dict[str, Any] = self._call("POST", f"/instances/{name}/clone", json=body)
        return result

    def verify(self, name: str, snapshot: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/instances/{name}/backups/{snapshot}/verify")
        return result

    def backup_policy(self, name: str | None, organisation: str | None, changes: dict[str, Any]) -> dict[str, Any]:
        if not name:
            raise InvalidInput("remotely, backup-policy takes an instance's name")
        path = f"/instances/{name}/backup-policy"
        result: dict[str, Any] = self._call("PUT", path, json=changes) if changes else self._call("GET", path)
        return result

    def repository(self, check: bool) -> dict[str, Any]:
        if check:
            self._call("POST", "/backups/repository/check")
        result: dict[str, Any] = self._call("GET", "/backups/repository")
        return result

    def nodes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/nodes")
        return result

    def mail_status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/mail")
        return result

    def mail_test(self, address: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/mail/test", json={"address": address})
        return result

    def node_join(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/nodes/join-command")
        return result

    def node_label(self, node: str, changes: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/nodes/{node}/labels", json={"changes": changes})
        return result

    def node_drain(self, node: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/nodes/{node}/drain")
        return result

    def node_activate(self, node: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/nodes/{node}/activate")
        return result

    def node_evacuation(self, node: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/nodes/{node}/evacuation")
        return result

    def node_evacuate(self, node: str, confirm: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/nodes/{node}/evacuate", json={"confirm": confirm})
        return result

    def node_remove(self, node: str, force: bool) -> None:
        self._call("DELETE", f"/nodes/{node}", params={"force": "true" if force else "false"})

    def rollout_create(self, app: str, version: str, organisation: str | None, canary: int, canaries: list[str],
                       batch: int, start_at: datetime | None) -> dict[str, Any]:
        body = {"app": app, "version": version, "organisation": organisation, "canary": canary,
                "canaries": canaries, "batch": batch, "start_at": start_at.isoformat() if start_at else None}
        result: dict[str, Any] = self._call("POST", "/rollouts", json=body)
        return result

    def rollouts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/rollouts")
        return result

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/rollouts/{rollout_id}")
        return result

    def rollout_control(self, rollout_id: int, action: str) -> dict[str, Any]:
        if action not in ("pause", "resume", "cancel"):
            raise InvalidInput(f"a rollout is paused, resumed or cancelled, not {action!r}")
        result: dict[str, Any] = self._call("POST", f"/rollouts/{rollout_id}/{action}")
        return result

    def policy(self, name: str, changes: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/instances/{name}/policy", json=changes) if changes \
            else self._call("GET", f"/instances/{name}/policy")
        return result

    def org_policy(self, slug: str, changes: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/organisations/{slug}/policy", json=changes) if changes \
            else self._call("GET", f"/organisations/{slug}/policy")
        return result

    def events(self, name: str | None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"/instances/{name}/events" if name else "/events")
        return result

    def event_add(self, name: str, start: str, end: str, participants: int, title: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/instances/{name}/events", json={
            "start_at": start, "end_at": end, "participants": participants, "title": title})
        return result

    def event_remove(self, name: str, event_id: int) -> None:
        self._call("DELETE", f"/instances/{name}/events/{event_id}")

    def org_webhook(self, slug: str, url: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/organisations/{slug}/alert-webhook", json={"url": url})
        return result

    def org_window(self, slug: str, cron: str, minutes: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/organisations/{slug}/update-window",
                                            json={"cron": cron, "minutes": minutes})
        return result
