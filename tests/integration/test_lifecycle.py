"""The whole lifecycle of a demo instance on a real swarm, through the CLI and the edge."""

from __future__ import annotations

import pytest

from tests.conftest import HTTPS_PORT, PREFIX, Plane

pytestmark = pytest.mark.integration


def login(plane: Plane, domain: str, password: str) -> object:
    client = plane.http(domain)
    response = client.post("/login", json={"username": "admin", "password": password})
    return client if response.status_code == 200 else None


def start_and_find_note(plane: Plane, name: str, password: str) -> None:
    plane.hafen("start", name)
    client = login(plane, f"{name}.localhost", password)
    assert client is not None
    assert [n["body"] for n in client.get("/notes").json()] == ["kept across stop and delete"]


def edge_container(plane: Plane) -> str:
    containers = plane.containers(f"{PREFIX}-edge")
    assert len(containers) == 1
    return str(containers[0].id)


def test_lifecycle(plane: Plane, instance_name: str) -> None:
    name = instance_name
    plane.wait_until(lambda: plane.containers(f"{PREFIX}-edge"), timeout=120)
    edge = edge_container(plane)
    data = plane.create(name, "demo")
    assert data["name"] == name
    assert data["app"] == "demo"
    assert data["version"] == "1.0"
    assert data["domain"] == f"{name}.localhost"
    assert data["state"] == "running"
    assert data["url"].startswith(f"http://{name}.localhost:")
    assert data["username"] == "admin"
    assert len(data["password"]) >= 16
    domain, password = data["domain"], data["password"]

    # the app answers through the edge, over HTTP and HTTPS, and the admin logs in
    client = login(plane, domain, password)
    assert client is not None
    assert client.post("/notes", json={"body": "kept across stop and delete"}).status_code == 201
    import httpx

    with httpx.Client(verify=False, timeout=15) as https:  # the edge's internal CA signs .localhost
        tls = https.get(f"https://127.0.0.1:{HTTPS_PORT}/health", headers={"Host": domain},
                        extensions={"sni_hostname": domain})
    assert tls.status_code == 200

    shown = plane.json("show", name)
    assert shown["replicas"] == {"desired": 1, "running": 1, "set": 1, "autoscaled": None, "floor": None}
    assert set(shown["services"]) == {"db", "redis", "setup", "web"}
    assert shown["created_at"] and shown["error"] == ""
    assert [i["name"] for i in plane.json("list")].count(name) == 1
    assert plane.json("credentials", name) == {"username": "admin", "password": password}

    # the first change of the web service after the create (its replicas) keeps the task that runs: the
    # service's template stays as created, so the swarm rolls nothing over
    web = plane.docker.services.get(f"{PREFIX}-{name}_web")
    first = {t["ID"] for t in web.tasks() if t["DesiredState"] == "running"}
    plane.hafen("scale", name, "2")
    web.reload()
    assert first < {t["ID"] for t in web.tasks() if t["DesiredState"] == "running"}
    assert web.attrs.get("UpdateStatus") is None, web.attrs["UpdateStatus"]
    plane.hafen("scale", name, "1")

    # stop: the edge answers 503 with a page that says so; start brings the data back
    plane.hafen("stop", name)
    stopped = plane.http(domain).get("/")
    assert stopped.status_code == 503
    assert "stopped" in stopped.text
    assert plane.json("show", name)["state"] == "stopped"
    start_and_find_note(plane, name, password)

    # scale and restart
    plane.hafen("scale", name, "2")
    assert plane.json("show", name)["replicas"] == {"desired": 2, "running": 2, "set": 2, "autoscaled": None,
                                                    "floor": None}
    assert len(plane.containers(f"{PREFIX}-{name}_web")) == 2
    before = {c.id for c in plane.containers(f"{PREFIX}-{name}_web")}
    plane.hafen("restart", name)
    after = {c.id for c in plane.containers(f"{PREFIX}-{name}_web")}
    assert len(after) == 2 and not before & after

    # a new admin password replaces the old one
    result = plane.hafen("passwd", name)
    new_password = result.stdout.strip().rsplit(" ", 1)[-1]
    assert new_password != password
    assert login(plane, domain, password) is None
    assert login(plane, domain, new_password) is not None
    assert plane.json("credentials", name)["password"] == new_password
    # db_password, the newest admin_password and the relay's login (smtp_password)
    assert len(plane.labelled(name)["secrets"]) == 3

    # logs of a service
    logs = plane.hafen("logs", name, "--service", "setup").stdout
    assert "admin password set" in logs

    # delete keeps data; start brings the instance back with it
    plane.hafen("delete", name)
    assert plane.http(domain).get("/").status_code == 404

    # routes came and went through the proxy's admin API: the same proxy container served throughout
    assert edge_container(plane) == edge
    left = plane.labelled(name)
    assert left["services"] == set()
    assert left["volumes"] == {f"{PREFIX}-{name}_db", f"{PREFIX}-{name}_media"}
    assert len(left["secrets"]) == 3
    assert plane.json("show", name)["state"] == "deleted"
    start_and_find_note(plane, name, new_password)

    # erase leaves nothing behind
    plane.hafen("erase", name, "--yes")
    assert plane.labelled(name) == {"services": set(), "volumes": set(), "secrets": set(), "networks": set()}
    assert plane.hafen("show", name, check=False).returncode != 0
    assert plane.http(domain).get("/").status_code == 404

    # routes came and went through the proxy's admin API: the same proxy container served throughout
    assert edge_container(plane) == edge
