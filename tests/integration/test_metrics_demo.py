"""Metrics and alerts on a real swarm: Prometheus scrapes a demo instance, its charts have data (Chromium
screenshot), and an alert mail reaches a real SMTP server (aiosmtpd) when the instance's web service fails,
and a resolved mail after it is back.

One control plane of its own (prefix PREFIX + "m", its ports 50 above the shared plane's), because it needs
short alert timings (HAFEN_ALERT_FOR etc.) that the shipped defaults do not have; one instance for all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, HTTP_PORT, HTTPS_PORT, PREFIX, WEB_PORT, Plane, chromium, wait_until

pytestmark = pytest.mark.integration

MPREFIX = f"{PREFIX}m"
PORTS = (HTTP_PORT + 50, HTTPS_PORT + 50, WEB_PORT + 50)
PROMETHEUS = f"http://127.0.0.1:{WEB_PORT + 50 + 10}"
NAME = f"met{os.getpid() % 1000}"
ADMIN_MAIL = "alice@acme.test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """A real SMTP server (aiosmtpd) on the loopback, where Alertmanager (host network) delivers."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                message = message_from_bytes(envelope.content)
                with outer.lock:
                    outer.messages.append({"to": list(envelope.rcpt_tos), "subject": str(message["Subject"]),
                                           "at": time.time()})
                return "250 OK"

        self.port = _free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def find(self, *words: str) -> dict[str, Any] | None:
        with self.lock:
            return next((m for m in self.messages if all(w in m["subject"] for w in words)), None)

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    yield box
    box.stop()


@pytest.fixture(scope="module")
def mplane(mailbox: Mailbox) -> Iterator[Plane]:
    data_dir = Path(tempfile.mkdtemp(prefix="hafen-metrics-test-"))
    p = Plane(data_dir, prefix=MPREFIX, ports=PORTS, env={
        "HAFEN_METRICS": "true",
        "HAFEN_SMTP_URL": f"smtp://127.0.0.1:{mailbox.port}?tls=none",
        "HAFEN_MAIL_FROM": "alerts@hafen.test",
        "HAFEN_SCRAPE_INTERVAL": "2s",
        "HAFEN_EVALUATION_INTERVAL": "2s",
        "HAFEN_ALERT_FOR": "4s",
        "HAFEN_ALERT_GROUP_WAIT": "1s",
        "HAFEN_ALERT_GROUP_INTERVAL": "2s",
        "HAFEN_ALERT_REPEAT_INTERVAL": "1h",
    })
    p.cleanup()
    p.hafen("up", "--detach", timeout=1800)
    p.hafen("backup-policy", "--disable")
    try:
        yield p
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(data_dir / "controller.log", ARTIFACTS / "metrics-controller.log")
        p.hafen("down", check=False)
        p.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def instance(mplane: Plane) -> Iterator[str]:
    mplane.hafen("org", "create", "acme")
    mplane.hafen("org", "add-member", "acme", "alice", "--role", "admin", "--email", ADMIN_MAIL)
    mplane.create(NAME, "demo", "--org", "acme")
    yield NAME
    mplane.hafen("erase", NAME, "--yes", check=False)


def query(expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=10)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def _prometheus_answers() -> bool:
    try:
        return httpx.get(f"{PROMETHEUS}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_prometheus_scrapes_the_instance_and_its_charts_have_data(mplane: Plane, instance: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait_until(_prometheus_answers, timeout=120)
    with mplane.http(f"{instance}.localhost") as client:
        for _ in range(20):
            assert client.get("/health").status_code == 200
    # every job's targets up: hafen's exporter, the containers' and the node's exporters, Prometheus, Alertmanager
    wait_until(lambda: {t["metric"]["job"] for t in query("up == 1")} >= {
        "hafen", "containers", "node", "prometheus", "alertmanager"}, timeout=120)
    wait_until(lambda: query(f'hafen_container_memory_bytes{{instance="{instance}",service="web"}}'), timeout=60)
    wait_until(lambda: query(f'sum(hafen_edge_requests_total{{instance="{instance}",code="200"}}) >= 20'),
               timeout=60)
    wait_until(lambda: query(f'rate(hafen_container_cpu_seconds_total{{instance="{instance}"}}[1m])'), timeout=60)
    limit = query(f'hafen_container_memory_limit_bytes{{instance="{instance}",service="web"}}')
    assert float(limit[0]["value"][1]) == 128 * 1024**2  # the demo's small size
    assert query('node_filesystem_avail_bytes{mountpoint="/"}')  # the node exporter reads the host's root

    out = mplane.hafen("user", "add-operator", "metricsops").stdout
    password = next(line.split()[1] for line in out.splitlines() if line.startswith("password"))
    base = f"http://127.0.0.1:{PORTS[2]}"
    with chromium("1280,1600") as driver:
        driver.get(f"{base}/login")
        driver.find_element(By.NAME, "username").send_keys("metricsops")
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(driver, 15).until(lambda d: "/login" not in d.current_url)
        driver.get(f"{base}/instances/{instance}")
        WebDriverWait(driver, 30, poll_frequency=0.25).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#instance-charts svg.chart")) == 5)
        charts = driver.find_elements(By.CSS_SELECTOR, "#instance-charts svg.chart")
        driver.execute_script("document.getElementById('instance-charts').scrollIntoView()")
        driver.save_screenshot(str(ARTIFACTS / "metrics-instance-charts.png"))
        cpu, memory, requests = charts[0], charts[1], charts[2]
        assert cpu.find_elements(By.CSS_SELECTOR, "polyline"), "the CPU chart has no line"
        assert len(memory.find_elements(By.CSS_SELECTOR, "polyline")) == 2  # used and the limit
        assert requests.find_elements(By.CSS_SELECTOR, "polyline")
        driver.get(f"{base}/")
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#fleet svg.chart"))
        driver.execute_script("document.getElementById('fleet').scrollIntoView()")
        driver.save_screenshot(str(ARTIFACTS / "metrics-fleet.png"))
        assert instance in driver.find_element(By.ID, "fleet").text


def test_a_failing_web_service_mails_the_organisations_admin_then_the_resolution(
        mplane: Plane, instance: str, mailbox: Mailbox) -> None:
    wait_until(_prometheus_answers, timeout=120)
    wait_until(lambda: query(f'hafen_instance_up{{instance="{instance}"}} == 1'), timeout=60)
    db = f"{MPREFIX}-{instance}_db"
    failed_at = time.time()
    mplane.docker.services.get(db).scale(0)  # the web's health check asks the database: the web fails
    try:
        firing = wait_until(lambda: mailbox.find("FIRING", "InstanceDown", instance), timeout=240, interval=0.5)
    finally:
        mplane.docker.services.get(db).scale(1)  # (a fresh read: the scale above changed its version)
    assert ADMIN_MAIL in firing["to"]
    down_to_mail = firing["at"] - failed_at
    resolved = wait_until(lambda: mailbox.find("RESOLVED", "InstanceDown", instance), timeout=240, interval=0.5)
    assert ADMIN_MAIL in resolved["to"]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "metrics-alert-mail.json").write_text(json.dumps(
        {"failure_to_mail_s": round(down_to_mail, 1), "messages": mailbox.messages}, indent=1))

    # a silence for a maintenance window, through the CLI (Alertmanager's API behind it)
    made = mplane.json("alerts", "silence", instance, "--for", "1h", "--comment", "maintenance")
    listed = mplane.json("alerts", "list")
    assert [s["id"] for s in listed["silences"]] == [made["id"]]
    assert listed["silences"][0]["instance"] == instance
    bad = mplane.hafen("alerts", "silence", instance, "--for", "soon", check=False)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    mplane.hafen("alerts", "unsilence", made["id"])
    assert mplane.json("alerts", "list")["silences"] == []
