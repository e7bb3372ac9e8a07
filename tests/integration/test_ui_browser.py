"""The web UI in headless Chromium against a real control plane: sign in, create, watch, stop, audit, erase."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import ARTIFACTS, WEB_PORT, Plane, chromium

pytestmark = pytest.mark.integration

BASE = f"http://127.0.0.1:{WEB_PORT}"
NAME = f"uidemo{os.getpid() % 1000}"


@pytest.fixture(scope="module")
def operator(plane: Plane) -> tuple[str, str]:
    out = plane.hafen("user", "add-operator", "uiops").stdout
    passwords = [line.split()[1] for line in out.splitlines() if line.startswith("password")]
    if not passwords:
        pytest.fail(f"add-operator printed no password: {out!r}")
    return "uiops", passwords[0]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def instance(plane: Plane) -> Iterator[str]:
    yield NAME
    plane.hafen("erase", NAME, "--yes", check=False)


def shot(driver: Any, step: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"ui-{step}.png"))


def text_of(driver: Any, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text).strip()
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def wait_until(driver: Any, holds: Callable[[], bool], timeout: float) -> None:
    """Wait without reloading the page: what changes comes by htmx polling."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda _: holds())
    except Exception:
        shot(driver, "failure")
        raise


def wait_for_text(driver: Any, css: str, text: str, timeout: float = 120) -> None:
    wait_until(driver, lambda: text_of(driver, css) == text, timeout)


def row_state(name: str) -> str:
    return f"tr[data-instance='{name}'] .badge"


def test_operator_creates_watches_stops_audits_and_erases(plane: Plane, operator: tuple[str, str], browser: Any,
                                                          instance: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    username, password = operator

    driver.get(f"{BASE}/")
    assert "/login" in driver.current_url
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    shot(driver, "login")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(driver, lambda: bool(driver.find_elements(By.LINK_TEXT, "New instance")), timeout=15)
    assert "operator" in driver.find_element(By.CSS_SELECTOR, "header .who").text
    shot(driver, "dashboard-empty")

    driver.find_element(By.LINK_TEXT, "New instance").click()
    driver.find_element(By.NAME, "name").send_keys(instance)
    Select(driver.find_element(By.NAME, "app")).select_by_value("demo")
    shot(driver, "new-instance")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(driver, lambda: "/operations/" in driver.current_url, timeout=30)
    wait_for_text(driver, "#operation-state", "succeeded", timeout=240)
    shot(driver, "create-succeeded")

    driver.get(f"{BASE}/")
    wait_for_text(driver, row_state(instance), "running", timeout=60)
    shot(driver, "dashboard-running")

    driver.find_element(By.LINK_TEXT, instance).click()
    wait_for_text(driver, "#instance-state", "running", timeout=30)
    shot(driver, "instance-running")
    wait_until(driver, lambda: "Loading" not in text_of(driver, "#instance-logs"), timeout=15)
    driver.execute_script("document.getElementById('instance-logs').scrollIntoView()")
    shot(driver, "instance-logs")

    secret = plane.json("credentials", instance)["password"]
    assert secret not in driver.page_source
    driver.find_element(By.CSS_SELECTOR, "button[name=reveal]").click()
    wait_until(driver, lambda: secret in text_of(driver, "dl.secret"), timeout=15)
    shot(driver, "credentials-revealed")

    # an update to 2.0 from the instance page: the operation's page follows its steps to the end
    plane.running_backup_target()  # an update starts with a backup
    driver.get(f"{BASE}/instances/{instance}")
    Select(driver.find_element(By.NAME, "version")).select_by_value("2.0")
    driver.find_element(By.CSS_SELECTOR, "button[name=update]").click()
    wait_until(driver, lambda: "/operations/" in driver.current_url, timeout=30)
    wait_until(driver, lambda: "back up 1.0 before the update" in driver.page_source, timeout=60)  # its steps
    wait_for_text(driver, "#operation-state", "succeeded", timeout=240)
    shot(driver, "update-succeeded")
    assert plane.json("show", instance)["version"] == "2.0"

    driver.get(f"{BASE}/instances/{instance}")
    driver.find_element(By.CSS_SELECTOR, "button[name=stop]").click()
    wait_until(driver, lambda: "/operations/" in driver.current_url, timeout=30)
    wait_for_text(driver, "#operation-state", "succeeded", timeout=120)
    shot(driver, "stop-succeeded")

    driver.find_element(By.PARTIAL_LINK_TEXT, f"Instance {instance}").click()
    wait_for_text(driver, "#instance-state", "stopped", timeout=60)
    shot(driver, "instance-stopped")
    driver.get(f"{BASE}/")
    wait_for_text(driver, row_state(instance), "stopped", timeout=30)
    shot(driver, "dashboard-stopped")

    driver.get(f"{BASE}/audit?instance={instance}&action=stop")
    rows = driver.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
    assert len(rows) == 1, [r.text for r in rows]
    assert username in rows[0].text and "ui" in rows[0].text
    assert rows[0].find_element(By.CSS_SELECTOR, ".badge").text == "ok"
    shot(driver, "audit-stop")

    driver.get(f"{BASE}/instances/{instance}")
    driver.find_element(By.NAME, "confirm").send_keys(instance)
    driver.find_element(By.CSS_SELECTOR, "button[name=erase]").click()
    wait_until(driver, lambda: "/operations/" in driver.current_url, timeout=30)
    wait_until(driver, lambda: text_of(driver, "#operation-state") == "succeeded", timeout=120)
    shot(driver, "erase-succeeded")
    driver.get(f"{BASE}/")
    assert not driver.find_elements(By.CSS_SELECTOR, f"tr[data-instance='{instance}']")
    assert plane.labelled(instance) == {"services": set(), "volumes": set(), "secrets": set(), "networks": set()}
