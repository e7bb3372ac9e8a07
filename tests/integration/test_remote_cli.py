"""The CLI in remote mode: a customer's admin drives a real control plane through the REST API."""

from __future__ import annotations

import json

import pytest

from tests.conftest import WEB_PORT, Plane

pytestmark = pytest.mark.integration


def token(plane: Plane, username: str, scope: str = "write") -> str:
    return plane.hafen("user", "token", username, "--name", "remote-cli", "--scope", scope).stdout.strip()


def test_remote_cli(plane: Plane, instance_name: str) -> None:
    name = instance_name
    plane.hafen("org", "create", "remoteco")
    plane.hafen("org", "add-member", "remoteco", "rita", "--role", "admin")
    plane.hafen("org", "create", "otherco")
    plane.hafen("org", "add-member", "otherco", "otto", "--role", "admin")
    rita = {"HAFEN_URL": f"http://127.0.0.1:{WEB_PORT}", "HAFEN_TOKEN": token(plane, "rita")}
    otto = {**rita, "HAFEN_TOKEN": token(plane, "otto")}

    created = json.loads(plane.hafen("create", name, "--app", "demo", "--org", "remoteco", "--json", env=rita).stdout)
    assert (created["state"], created["organisation"]) == ("running", "remoteco")
    assert created["password"]
    listed = json.loads(plane.hafen("list", "--json", env=rita).stdout)
    assert [row["name"] for row in listed] == [name]
    assert json.loads(plane.hafen("list", "--json", env=otto).stdout) == []

    hidden = plane.hafen("show", name, env=otto, check=False)
    assert (hidden.returncode, hidden.stderr.strip()) == (3, f"error: no instance named {name!r}")

    plane.hafen("lock", name, "--action", "stop", "--reason", "general assembly today", env=rita)
    refused = plane.hafen("stop", name, env=rita, check=False)
    assert refused.returncode == 4
    assert refused.stderr.splitlines() == [
        f"error: {name} is locked against stop: general assembly today (rita)"
    ]
    lock_id = json.loads(plane.hafen("show", name, "--json", env=rita).stdout)["locks"][0]["id"]
    plane.hafen("unlock", name, str(lock_id), env=rita)
    plane.hafen("stop", name, env=rita)
    assert json.loads(plane.hafen("show", name, "--json", env=rita).stdout)["state"] == "stopped"

    entries = json.loads(plane.hafen("audit", "--instance", name, "--json", env=rita).stdout)
    assert [(e["action"], e["result"], e["actor"], e["via"]) for e in entries][:3] == [
        ("stop", "ok", "rita", "api"), ("unlock", "ok", "rita", "api"), ("stop", "refused", "rita", "api"),
    ]
    plane.hafen("erase", name, "--yes", env=rita)
    assert plane.labelled(name) == {"services": set(), "volumes": set(), "secrets": set(), "networks": set()}
