"""Real OpenSlides 3.3 through the edge: REST, persistence, erase, and the web client in Chromium."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, HTTP_PORT, PREFIX, Plane, chromium
from tests.mailbox import Mailbox

pytestmark = pytest.mark.e2e

NAME = "osx"


@pytest.fixture(scope="module")
def openslides(plane: Plane) -> Iterator[dict[str, Any]]:
    data = plane.create(NAME, "openslides")
    yield data
    plane.hafen("erase", NAME, "--yes", check=False)


def session(plane: Plane, data: dict[str, Any]) -> Any:
    client = plane.http(data["domain"])
    client.get("/apps/users/whoami/")
    token = client.cookies.get("OpenSlidesCsrfToken")
    if token:
        client.headers["X-CSRFToken"] = token
    response = client.post("/apps/users/login/", json={"username": data["username"], "password": data["password"]})
    assert response.status_code == 200, response.text
    token = client.cookies.get("OpenSlidesCsrfToken")
    if token:
        client.headers["X-CSRFToken"] = token
    return client


def motion_titles(plane: Plane, data: dict[str, Any]) -> list[str]:
    return [m["title"] for m in session(plane, data).get("/rest/motions/motion/").json()]


def test_version_and_rest_login(plane: Plane, openslides: dict[str, Any]) -> None:
    version = plane.http(openslides["domain"]).get("/apps/core/version/")
    assert version.status_code == 200
    assert version.json()["openslides_version"] == "3.3"
    wrong = plane.http(openslides["domain"]).post("/apps/users/login/", json={"username": "admin", "password": "x"})
    assert wrong.status_code == 400
    whoami = session(plane, openslides).get("/apps/users/whoami/").json()
    assert whoami["user"]["username"] == "admin"


def test_an_invitation_email_arrives_with_the_instances_sender(plane: Plane, openslides: dict[str, Any],
                                                                mailbox: Mailbox) -> None:
    """OpenSlides' own "send invitation e-mails" (its REST API), through the relay to the tests' SMTP server."""
    client = session(plane, openslides)
    address = f"ina-{int(time.time())}@example.test"
    created = client.post("/rest/users/user/", json={"username": address.split("@")[0], "first_name": "Ina",
                                                     "last_name": "Vitee", "email": address})
    assert created.status_code == 201, created.text
    users = {u["username"]: u["id"] for u in client.get("/rest/users/user/").json()}
    body = {"user_ids": [users[address.split("@")[0]]], "subject": "Your access to {event_name}",
            "message": "Dear {name}, your user name is {username} and your password {password}."}
    # the relay joins a new instance's mail network on the controller's next pass (and restarts for each new one)
    deadline = time.monotonic() + 120
    while True:
        sent = client.post("/rest/users/user/mass_invite_email/", json=body)
        # (its answer comes wrapped with the autoupdate it caused)
        if (sent.status_code == 200 and sent.json()["data"]["count"] == 1) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert sent.status_code == 200 and sent.json()["data"] == {"count": 1, "no_email_ids": []}, sent.text
    mail = mailbox.wait_for(lambda m: address in m.rcpt_tos, timeout=60)
    assert mail.mail_from == f"{NAME}@mail.test"
    assert mail.header_from == f"OpenSlides <{NAME}@mail.test>"
    assert "your user name is" in mail.message.get_body().get_content()  # type: ignore[union-attr]


def test_websocket_passes_the_edge_and_survives_other_instances_coming_and_going(
    plane: Plane, openslides: dict[str, Any]
) -> None:
    client = session(plane, openslides)
    cookies = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    request = (
        "GET /ws/ HTTP/1.1\r\n"
        f"Host: {openslides['domain']}\r\n"
        "Connection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: aGFmZW4td2Vic29ja2V0IQ==\r\n"
        f"Cookie: {cookies}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=15) as sock:
        sock.sendall(request.encode())
        answer = sock.recv(4096).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 101"), answer
        # another instance's route comes and goes: this connection must stay open
        plane.create("ws-neighbour", "demo")
        plane.hafen("erase", "ws-neighbour", "--yes")
        sock.settimeout(1)
        try:
            frame = sock.recv(4096)
        except TimeoutError:
            frame = None  # quiet and open
        assert frame != b"", "the edge closed the websocket"
        assert frame is None or frame[0] != 0x88, f"the websocket got a close frame: {frame!r}"


def test_motion_survives_stop_start_and_delete_start(plane: Plane, openslides: dict[str, Any]) -> None:
    client = session(plane, openslides)
    created = client.post("/rest/motions/motion/", json={"title": "Kept by hafen", "text": "<p>A motion</p>",
                                                         "workflow_id": 1})
    assert created.status_code == 201, created.text
    plane.hafen("stop", NAME)
    assert plane.http(openslides["domain"]).get("/").status_code == 503
    plane.hafen("start", NAME)
    assert "Kept by hafen" in motion_titles(plane, openslides)
    plane.hafen("delete", NAME)
    assert plane.labelled(NAME)["services"] == set()
    plane.hafen("start", NAME)
    assert "Kept by hafen" in motion_titles(plane, openslides)


def browser_login(driver: Any, openslides: dict[str, Any], shots: str = "openslides") -> None:
    """On the page the browser shows (it may reload itself first): the login form, then the signed-in app."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 90)
    username = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "input[formcontrolname=username]")))
    driver.save_screenshot(str(ARTIFACTS / f"{shots}-login.png"))
    username.send_keys(openslides["username"])
    driver.find_element(By.CSS_SELECTOR, "input[formcontrolname=password]").send_keys(openslides["password"])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, "input[formcontrolname=username]")))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "mat-sidenav")))
    driver.save_screenshot(str(ARTIFACTS / f"{shots}-logged-in.png"))
    assert "Administrator" in driver.page_source or "admin" in driver.page_source


def test_web_client_login_in_chromium(plane: Plane, openslides: dict[str, Any]) -> None:
    with chromium("1280,900") as driver:
        driver.get(f"http://{openslides['domain']}:{HTTP_PORT}/")
        browser_login(driver, openslides)


def test_a_sleeping_instance_wakes_on_a_browser_visit_and_the_admin_logs_in(
        plane: Plane, openslides: dict[str, Any]) -> None:
    plane.hafen("policy", NAME, "--idle", "10s", "--deep-sleep", "never")
    try:
        def asleep() -> bool:
            shown = plane.json("show", NAME)
            return bool(shown["state"] == "sleeping" and shown["services"]["web"]["running"] == 0)

        plane.wait_until(asleep, timeout=120, interval=1)
        with chromium("1280,900") as driver:
            driver.get(f"http://{openslides['domain']}:{HTTP_PORT}/")
            assert "is waking up" in driver.page_source  # the edge's page, which reloads itself
            driver.save_screenshot(str(ARTIFACTS / "openslides-waking.png"))
            browser_login(driver, openslides, "openslides-woken")
        shown = plane.json("show", NAME)
        assert shown["state"] == "running" and shown["elastic"]["decisions"][0]["action"] == "wake"
    finally:
        plane.hafen("policy", NAME, "--idle", "never")


def _upstreams(plane: Plane) -> dict[str, int]:
    """The edge proxy's open requests by web task address (its admin API)."""
    for sock in sorted((plane.data_dir / "edge").glob("admin-*.sock")):
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=5) as admin:
            return {u["address"]: u["num_requests"] for u in admin.get("http://localhost/reverse_proxy/upstreams").json()
                    if u["address"].endswith(":8000")}
    return {}


def _messages(ws: Any, seconds: float) -> list[dict[str, Any]]:
    """What OpenSlides sent on a websocket within `seconds`: JSON, lz4-compressed when that is smaller."""
    import lz4.frame

    found, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = ws.recv(timeout=left)
        except TimeoutError:
            break
        found.append(json.loads(lz4.frame.decompress(frame) if isinstance(frame, bytes) else frame))
    return found


def _sees(ws: Any, title: str, seconds: float = 15) -> bool:
    return any(title in json.dumps(message) for message in _messages(ws, seconds))


def test_two_clients_on_different_replicas_see_each_others_changes_over_their_websockets(
        plane: Plane, openslides: dict[str, Any]) -> None:
    """OpenSlides 3 in big mode keeps its state in Redis and PostgreSQL: two web replicas serve one event."""
    from websockets.sync.client import connect

    plane.hafen("scale", NAME, "2")
    try:
        alice, bob = session(plane, openslides), session(plane, openslides)
        sockets: list[Any] = []
        for client in (alice, bob):
            cookies = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
            for _ in range(6):  # the edge takes turns (round robin): the second client on the other replica
                edge = socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=15)
                edge.settimeout(None)
                ws = connect(f"ws://{openslides['domain']}:{HTTP_PORT}/ws/", sock=edge, max_size=None,
                             additional_headers={"Cookie": cookies}, ping_interval=None, close_timeout=1)
                open_on = {a for a, n in _upstreams(plane).items() if n}
                if len(sockets) == 0 or len(open_on) == 2:
                    sockets.append(ws)
                    break
                ws.close()
        open_now = _upstreams(plane)
        assert len(sockets) == 2 and sorted(n for n in open_now.values() if n) == [1, 1], open_now
        first, second = sockets
        created = alice.post("/rest/motions/motion/", json={"title": "Seen by both replicas",
                                                            "text": "<p>one</p>", "workflow_id": 1})
        assert created.status_code == 201, created.text
        assert _sees(first, "Seen by both replicas") and _sees(second, "Seen by both replicas")
        created = bob.post("/rest/motions/motion/", json={"title": "And back again", "text": "<p>two</p>",
                                                          "workflow_id": 1})
        assert created.status_code == 201, created.text
        assert _sees(first, "And back again") and _sees(second, "And back again")
        for ws in sockets:
            ws.close()
    finally:
        plane.hafen("scale", NAME, "1")


def test_removed_database_service_is_brought_back_with_its_data(plane: Plane, openslides: dict[str, Any]) -> None:
    client = session(plane, openslides)
    created = client.post("/rest/motions/motion/", json={"title": "Outlives its database service",
                                                         "text": "<p>A motion</p>", "workflow_id": 1})
    assert created.status_code == 201, created.text
    db = f"{PREFIX}-{NAME}_db"
    subprocess.run(["docker", "service", "rm", db], check=True, capture_output=True)

    def repaired() -> bool:
        shown = plane.json("show", NAME)
        repairs = [op for op in shown["operations"] if op["kind"] == "repair"]
        assert not [op for op in repairs if op["state"] == "failed"], repairs
        return shown["state"] == "running" and any(op["state"] == "succeeded" for op in repairs)

    plane.wait_until(repaired, timeout=300, interval=2)
    assert db in plane.labelled(NAME)["services"]

    def motion_is_there() -> bool:
        try:
            return "Outlives its database service" in motion_titles(plane, openslides)
        except (AssertionError, httpx.HTTPError, ValueError):  # the web service reconnects to the database
            return False

    plane.wait_until(motion_is_there, timeout=120, interval=2)


def test_a_traceback_in_its_log_is_one_grouped_error_whose_count_grows(plane: Plane,
                                                                      openslides: dict[str, Any]) -> None:
    """A real Python traceback, printed by the web container's interpreter to its log, twice (with another
    id in its message): one kind of error of the instance, counted twice."""
    web = plane.containers(f"{PREFIX}-{NAME}_web")[0]
    script = ("import sys\nsys.stderr = open('/proc/1/fd/2', 'w')\n"
              "def load(motion):\n    return {}[f'motion {motion}']\n"
              "def view(motion):\n    return load(motion)\n"
              "view(int(sys.argv[1]))\n")

    def fail(motion: int) -> None:
        code, _ = web.exec_run(["python3", "-c", script, str(motion)])
        assert code == 1

    def groups() -> list[dict[str, Any]]:
        return [g for g in plane.json("errors", "--instance", NAME) if g["kind"] == "KeyError"]

    fail(17)
    first = plane.wait_until(groups, timeout=60)
    assert len(first) == 1 and first[0]["count"] == 1 and first[0]["service"] == "web"
    assert "in view" in first[0]["sample"] and "KeyError" in first[0]["sample"]
    fail(4711)
    again = plane.wait_until(lambda: [g for g in groups() if g["count"] == 2], timeout=60)
    assert [g["id"] for g in again] == [first[0]["id"]]
    lines = json.loads(plane.hafen("logs", NAME, "--service", "web", "--level", "error", "--grep", "motion 4711",
                                   "--json").stdout)
    assert lines and lines[0]["message"].startswith("KeyError")


def test_erase_leaves_nothing(plane: Plane, openslides: dict[str, Any]) -> None:
    plane.hafen("erase", NAME, "--yes")
    assert plane.labelled(NAME) == {"services": set(), "volumes": set(), "secrets": set(), "networks": set()}
    assert plane.http(openslides["domain"]).get("/").status_code == 404

