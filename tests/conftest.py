"""Shared fixtures of the slow tiers: a real control plane on the local swarm.

The control plane runs as the user runs it, through the `hafen` command, with
its own data directory, object prefix ("hit") and ports, so that a test run
never touches a developer's instances. Everything labelled with that prefix is
removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mailbox import mailbox, smarthost_url  # noqa: F401 (the `mailbox` fixture)

ROOT = Path(__file__).resolve().parent.parent
# Overridable so that several test runs (say, two developers' branches) can share one engine.
PREFIX = os.environ.get("HAFEN_TEST_PREFIX", "hit")
_PORT_OFFSET = int(os.environ.get("HAFEN_TEST_PORT_OFFSET", "0"))
HTTP_PORT = 28080 + _PORT_OFFSET
HTTPS_PORT = 28443 + _PORT_OFFSET
WEB_PORT = 28765 + _PORT_OFFSET
LOG_PORT = 25514 + _PORT_OFFSET  # the log collector's, on every node
ARTIFACTS = ROOT / "test-artifacts"
# The off-host backup target of the tests: a REST server for restic (rclone serve restic) in a container on
# the installation's backup network, its storage a small tmpfs so that a test can fill it.
BACKUP_TARGET = f"{PREFIX}-backup-target"
BACKUP_TARGET_SIZE = "384m"
BACKUP_REPOSITORY = f"rest:http://{BACKUP_TARGET}:8000/hafen"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass (HAFEN_TEST_DATABASE=postgresql, scripts/test.sh) only the unit tier runs."""
    if os.environ.get("HAFEN_TEST_DATABASE", "sqlite") != "postgresql":
        return
    unit = ROOT / "tests" / "unit"
    keep = [item for item in items if unit in item.path.parents]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if unit not in item.path.parents])
        items[:] = keep


def wait_until(predicate: Any, timeout: float = 60, interval: float = 0.5) -> Any:
    """The predicate's first true value, asked every `interval` seconds; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s")


class Plane:
    def __init__(self, data_dir: Path, prefix: str = PREFIX, ports: tuple[int, int, int] = (HTTP_PORT, HTTPS_PORT,
                 WEB_PORT), env: dict[str, str] | None = None) -> None:
        """The shared plane by default; another prefix and ports (and environment) make a second one."""
        import docker

        self.data_dir = data_dir
        self.prefix = prefix
        self.http_port = ports[0]
        self.docker = docker.from_env(timeout=120)
        self.env = {
            # the control plane's database is its data directory's SQLite unless `env` says otherwise
            **{k: v for k, v in os.environ.items() if k != "HAFEN_DATABASE_URL"},
            "HAFEN_DATA_DIR": str(data_dir),
            "HAFEN_PREFIX": prefix,
            "HAFEN_ENGINE": "swarm",
            "HAFEN_HTTP_PORT": str(ports[0]),
            "HAFEN_HTTPS_PORT": str(ports[1]),
            "HAFEN_WEB_PORT": str(ports[2]),
            "HAFEN_LOG_PORT": str(LOG_PORT + ports[2] - WEB_PORT),
            # Prometheus and Alertmanager run in their own plane (tests/integration/test_metrics_demo.py): said
            # here, as the unit tier's conftest (loaded in the same run) turns them off in os.environ
            "HAFEN_METRICS": "false",
            "HAFEN_BACKUP_REPOSITORY": BACKUP_REPOSITORY,
            "HAFEN_BACKUP_RETRIES": "1",
            # one node: no registry (the multinode tier has one, see tests/multinode/conftest.py)
            "HAFEN_REGISTRY_PORT": "0",
            # the demo app's builds broken on purpose, for the update tests (its images: scripts/test.sh)
            "HAFEN_CATALOG_EXTRA": str(ROOT / "tests" / "catalog"),
            # instances shared by several tests must not fall asleep between them; the sleep tests set their own
            "HAFEN_IDLE": "never",
            # the mail relay's smarthost: the tests' SMTP server (tests/mailbox.py), a low limit to test
            "HAFEN_SMTP_URL": smarthost_url(),
            "HAFEN_MAIL_FROM": "hafen@mail.test",
            "HAFEN_MAIL_RATE": "10/m",
            **(env or {}),
        }

    def hafen(self, *args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "hafen", *args],
            env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"hafen {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.hafen(*args, "--json").stdout)

    def create(self, name: str, app: str = "demo", *extra: str) -> dict[str, Any]:
        data: dict[str, Any] = self.json("create", name, "--app", app, *extra)
        return data

    def http(self, domain: str) -> Any:
        import httpx

        # Python's resolver does not map *.localhost to loopback as browsers and curl do.
        return httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", headers={"Host": domain}, timeout=15)

    def start_backup_target(self) -> Any:
        """The REST server the test installation backs up to, on the network its backup jobs join."""
        network = f"{PREFIX}-backup"
        labels = {"hafen.prefix": PREFIX}
        if not self.docker.networks.list(names=[network]):
            self.docker.networks.create(network, driver="overlay", attachable=True, scope="swarm", labels=labels)
        # back with dockerd when a test restarts it (its tmpfs comes back empty: the next backup makes a
        # new repository); a test that stops it on purpose keeps it stopped
        return self.docker.containers.run(
            "hafen/backup-target:1", name=BACKUP_TARGET, network=network, labels=labels, detach=True,
            tmpfs={"/data": f"size={BACKUP_TARGET_SIZE}"}, restart_policy={"Name": "unless-stopped"},
        )

    def backup_target(self) -> Any:
        return self.docker.containers.get(BACKUP_TARGET)

    def running_backup_target(self) -> Any:
        """The backup target, started again if an earlier test left it stopped."""
        target = self.backup_target()
        if target.status != "running":
            target.start()
        return target

    def labelled(self, instance: str | None = None) -> dict[str, set[str]]:
        """Names of every swarm object of this test installation (or of one instance)."""
        label = [f"hafen.prefix={self.prefix}"] + ([f"hafen.instance={instance}"] if instance else [])
        filters = {"label": label}
        api = self.docker.api
        return {
            "services": {s["Spec"]["Name"] for s in api.services(filters=filters)},
            "volumes": {v["Name"] for v in (api.volumes(filters=filters).get("Volumes") or [])},
            "secrets": {s["Spec"]["Name"] for s in api.secrets(filters=filters)},
            "networks": {n["Name"] for n in api.networks(filters=filters)},
        }

    def containers(self, service: str) -> list[Any]:
        """The running containers of a service, or the container of that name (the edge proxy)."""
        tasks = list(self.docker.containers.list(filters={"label": f"com.docker.swarm.service.name={service}"}))
        return tasks or [c for c in self.docker.containers.list(filters={"name": service}) if c.name == service]

    def wait_until(self, predicate: Any, timeout: float = 60, interval: float = 0.5) -> Any:
        return wait_until(predicate, timeout, interval)

    def cleanup(self) -> None:
        """Remove every object labelled with the test prefix, in dependency order."""
        api = self.docker.api
        label = {"label": f"hafen.prefix={self.prefix}"}
        for service in api.services(filters=label):
            with contextlib.suppress(Exception):
                api.remove_service(service["ID"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = self.labelled()
            if not left["services"] and not any(
                c for c in self.docker.containers.list(all=True, filters=label)
            ):
                break
            for container in self.docker.containers.list(all=True, filters=label):
                with contextlib.suppress(Exception):
                    container.remove(force=True)
            time.sleep(1)
        for secret in api.secrets(filters=label):
            with contextlib.suppress(Exception):
                api.remove_secret(secret["ID"])
        for volume in api.volumes(filters=label).get("Volumes") or []:
            with contextlib.suppress(Exception):
                api.remove_volume(volume["Name"], force=True)
        for network in api.networks(filters=label):
            with contextlib.suppress(Exception):
                api.remove_network(network["Id"])


@contextlib.contextmanager
def chromium(window: str = "1280,1000") -> Iterator[Any]:
    """Headless Chromium driven by selenium, with a throw-away profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hafen-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic", f"--window-size={window}",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                              options=options)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def plane() -> Iterator[Plane]:
    data_dir = Path(tempfile.mkdtemp(prefix="hafen-test-"))
    p = Plane(data_dir)
    p.cleanup()
    p.hafen("up", "--detach", timeout=1800)
    p.start_backup_target()
    # no backups on the default schedule while tests run (a test that wants some sets its own policy)
    p.hafen("backup-policy", "--disable")
    try:
        yield p
    finally:
        log = data_dir / "controller.log"
        ARTIFACTS.mkdir(exist_ok=True)
        if log.exists():
            shutil.copyfile(log, ARTIFACTS / "controller.log")
        p.hafen("down", check=False)
        p.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def instance_name(request: pytest.FixtureRequest, plane: Plane) -> Iterator[str]:
    """A fresh instance name, erased after the test whatever happened."""
    name = "t" + request.node.name.replace("_", "-").replace("test-", "")[:20].strip("-") + f"-{os.getpid() % 1000}"
    yield name
    plane.hafen("erase", name, "--yes", check=False)
