"""Isolation between instances, secrets kept out of sight, and recovery of the controller."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import PREFIX, Plane
from tests.probes import HTTP, POSTGRES, REDIS, ROUTES, run_in

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def pair(plane: Plane) -> Iterator[tuple[str, str]]:
    names = ("iso-a", "iso-b")
    for name in names:
        plane.create(name, "demo")
    yield names
    for name in names:
        plane.hafen("erase", name, "--yes", check=False)


def test_database_reachable_only_from_its_own_instance(plane: Plane, pair: tuple[str, str]) -> None:
    a, b = pair
    web_a = plane.containers(f"{PREFIX}-{a}_web")[0]
    db_b = plane.containers(f"{PREFIX}-{b}_db")[0]
    db_b_ip = db_b.attrs["NetworkSettings"]["Networks"][f"{PREFIX}-{b}_internal"]["IPAddress"]

    code, output = run_in(web_a, "python3", "-c", POSTGRES, "db")
    assert code == 0 and "postgres answered" in output, output
    # B's database is on B's network alone: A has no route to it and cannot resolve its name
    code, output = run_in(web_a, "python3", "-c", POSTGRES, db_b_ip)
    assert code != 0, f"A's web reached B's database at {db_b_ip}: {output}"
    assert "unreachable" in output.lower(), output
    code, output = run_in(web_a, "python3", "-c", POSTGRES, f"{PREFIX}-{b}_db")
    assert code != 0 and "gaierror" in output, output
    # and no default route at all: a web service has no way off the host
    code, output = run_in(web_a, "python3", "-c", ROUTES)
    assert code == 0
    assert not [line for line in output.splitlines()[1:] if line.split()[1:2] == ["00000000"]], output

    # only the web service joins its instance's edge network; no instance joins the shared one
    networks = set(db_b.attrs["NetworkSettings"]["Networks"])
    assert networks == {f"{PREFIX}-{b}_internal"}
    # (and its own mail network, which only it and the mail relay join: tests/integration/test_mail_demo.py)
    assert set(web_a.attrs["NetworkSettings"]["Networks"]) == {f"{PREFIX}-{a}_internal", f"{PREFIX}-{a}_edge",
                                                               f"{PREFIX}-{a}_mail"}


def _ip(container: object, network: str) -> str:
    return str(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])  # type: ignore[attr-defined]


def test_web_services_of_different_instances_cannot_reach_each_other(plane: Plane, pair: tuple[str, str]) -> None:
    a, b = pair
    web_a = plane.containers(f"{PREFIX}-{a}_web")[0]
    web_b = plane.containers(f"{PREFIX}-{b}_web")[0]
    db_b = plane.containers(f"{PREFIX}-{b}_db")[0]
    redis_b = plane.containers(f"{PREFIX}-{b}_redis")[0]

    # A's own services answer: the probes below can tell an answer from none
    for script, host, port in ((HTTP, "127.0.0.1", "8000"), (POSTGRES, "db", ""), (REDIS, "redis", "")):
        code, output = run_in(web_a, "python3", "-c", script, host, *([port] if port else []))
        assert code == 0 and "answered" in output, output

    # B's web, by its addresses on B's edge and internal networks and by every name it has
    targets = [
        _ip(web_b, f"{PREFIX}-{b}_edge"), _ip(web_b, f"{PREFIX}-{b}_internal"), f"{PREFIX}-{b}_web",
        f"tasks.{PREFIX}-{b}_web", f"{b}.localhost.{PREFIX}-route", f"{b}.localhost",
    ]
    for target in targets:
        code, output = run_in(web_a, "python3", "-c", HTTP, target, "8000")
        assert code != 0 and "http answered" not in output, f"A's web got an HTTP answer from {target}: {output}"
    for target in (_ip(db_b, f"{PREFIX}-{b}_internal"), f"{PREFIX}-{b}_db"):
        code, output = run_in(web_a, "python3", "-c", POSTGRES, target)
        assert code != 0 and "postgres answered" not in output, output
    for target in (_ip(redis_b, f"{PREFIX}-{b}_internal"), f"{PREFIX}-{b}_redis"):
        code, output = run_in(web_a, "python3", "-c", REDIS, target)
        assert code != 0 and "redis answered" not in output, output
    # (A's web reaches the proxy's port 80 on A's edge network, as any client on the internet does)

    # the proxy is on both instances' edge networks and reaches both
    proxy = plane.containers(f"{PREFIX}-edge")[0]
    assert {f"{PREFIX}-{a}_edge", f"{PREFIX}-{b}_edge"} <= set(proxy.attrs["NetworkSettings"]["Networks"])
    for name in pair:
        assert plane.http(f"{name}.localhost").get("/health").status_code == 200


def _caddy_config(plane: Plane) -> str:
    import httpx

    from hafen.edge.client import admin_sockets

    transport = httpx.HTTPTransport(uds=str(admin_sockets(plane.data_dir / "edge", "proxy")[0]))
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get("http://localhost/config/").text


def test_other_instances_coming_and_going_neither_restart_nor_reload_the_proxy(
    plane: Plane, pair: tuple[str, str], instance_name: str
) -> None:
    import http.client
    import threading

    from tests.conftest import HTTP_PORT

    a, _ = pair
    proxy = plane.containers(f"{PREFIX}-edge")[0]
    config = _caddy_config(plane)
    # one client connection through the proxy, kept open and used every 0.2 s meanwhile: a reload
    # closes it (Caddy shuts the old server down), a restart too
    conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=10)
    conn.auto_open = 0  # type: ignore[attr-defined]
    conn.connect()
    answers: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            try:
                conn.request("GET", "/health", headers={"Host": f"{a}.localhost"})
                response = conn.getresponse()
                response.read()
                answers.append(response.status)
            except Exception as exc:
                errors.append(repr(exc))
                return
            time.sleep(0.2)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        plane.create(instance_name, "demo")
        network = f"{PREFIX}-{instance_name}_edge"
        proxy.reload()
        assert network in proxy.attrs["NetworkSettings"]["Networks"]
        plane.hafen("erase", instance_name, "--yes")
        proxy.reload()
        assert network not in proxy.attrs["NetworkSettings"]["Networks"]
    finally:
        stop.set()
        asker.join()
        conn.close()
    assert errors == []
    assert len(answers) > 20 and set(answers) == {200}
    assert [c.id for c in plane.containers(f"{PREFIX}-edge")] == [proxy.id]
    assert _caddy_config(plane) == config


def test_no_secret_in_inspect_output_or_logs(plane: Plane, pair: tuple[str, str]) -> None:
    a, _ = pair
    web = plane.containers(f"{PREFIX}-{a}_web")[0]
    values = [plane.json("credentials", a)["password"]]
    code, output = run_in(web, "cat", "/run/secrets/db_password")
    assert code == 0
    values.append(output.strip())
    assert all(len(v) >= 16 for v in values)

    inspected = subprocess.run(
        ["docker", "service", "inspect", *sorted(plane.labelled(a)["services"])],
        capture_output=True, text=True, check=True,
    ).stdout
    inspected += json.dumps([c.attrs for c in plane.docker.containers.list(filters={"label": f"hafen.instance={a}"})])
    logs = "".join(plane.hafen("logs", a, "--service", svc).stdout for svc in ("db", "redis", "setup", "web"))
    logs += (plane.data_dir / "controller.log").read_text()
    for value in values:
        assert value not in inspected
        assert value not in logs
    # the secrets are stored encrypted in the control plane's database, not in plain text
    database = (plane.data_dir / "hafen.sqlite3").read_bytes()
    for value in values:
        assert value.encode() not in database


def test_killed_controller_finishes_create_after_restart(plane: Plane, instance_name: str) -> None:
    name = instance_name
    create = subprocess.Popen(
        [sys.executable, "-m", "hafen", "create", name, "--app", "demo", "--json"],
        env=plane.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # kill the controller once the create is under way: its database is being deployed
        plane.wait_until(lambda: f"{PREFIX}-{name}_db" in plane.labelled(name)["services"], timeout=60, interval=0.1)
        pid = int((plane.data_dir / "controller.pid").read_text())
        import os

        os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        assert "web" not in json.dumps(sorted(plane.labelled(name)["services"]))
        plane.hafen("up", "--detach")
        out, err = create.communicate(timeout=300)
    finally:
        if create.poll() is None:
            create.kill()
    assert create.returncode == 0, err
    data = json.loads(out)
    assert data["state"] == "running"

    objects = plane.labelled(name)
    assert objects["services"] == {f"{PREFIX}-{name}_{s}" for s in ("db", "redis", "setup", "web")}
    assert objects["volumes"] == {f"{PREFIX}-{name}_db", f"{PREFIX}-{name}_media"}
    assert objects["networks"] == {f"{PREFIX}-{name}_internal", f"{PREFIX}-{name}_edge"}
    assert objects["secrets"] == {f"{PREFIX}-{name}_db_password_v1", f"{PREFIX}-{name}_admin_password_v1",
                                  f"{PREFIX}-{name}_smtp_password_v1"}
    assert len(plane.containers(f"{PREFIX}-{name}_web")) == 1
    assert plane.http(data["domain"]).post(
        "/login", json={"username": "admin", "password": data["password"]}
    ).status_code == 200
