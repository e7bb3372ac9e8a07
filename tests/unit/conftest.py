"""Unit tier: the fake engine and the fake edge, a throw-away SQLite data directory, no Docker.

With HAFEN_TEST_DATABASE=postgresql (scripts/test.sh's second pass), the control plane's database is
a throw-away PostgreSQL server instead (tests/pgserver.py), started here and stopped at the end.
A HAFEN_DATABASE_URL of the caller's is never used: the tests empty the database after each test.

The environment is set at import time, before anything of hafen is imported, because
hafen.config.get_settings() and Django read it once.
"""

import os
import shutil
import tempfile

DATA_DIR = tempfile.mkdtemp(prefix="hafen-unit-")
os.environ["HAFEN_DATA_DIR"] = DATA_DIR
os.environ["HAFEN_ENGINE"] = "fake"
os.environ["HAFEN_PREFIX"] = "unit"
os.environ["HAFEN_HTTP_PORT"] = "18080"
os.environ["HAFEN_REGISTRY_PORT"] = "0"  # no registry but in its own tests (test_registry.py)
os.environ["HAFEN_METRICS"] = "false"  # no Prometheus and Alertmanager but in their own tests (test_metrics.py)
os.environ.pop("HAFEN_ACME_EMAIL", None)
os.environ.pop("HAFEN_DOMAIN_SUFFIX", None)
os.environ.pop("HAFEN_DATABASE_URL", None)
if os.environ.get("HAFEN_TEST_DATABASE", "sqlite") == "postgresql":
    from tests.pgserver import unit_database

    os.environ["HAFEN_DATABASE_URL"] = unit_database()

from hafen.django_setup import setup  # noqa: E402

setup()

from django.conf import settings as django_settings  # noqa: E402

django_settings.ALLOWED_HOSTS.append("testserver")  # the host of Django's test client

# Accounts are made by the dozen here; a slow hash buys nothing in a throw-away database.
django_settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

import pytest  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402

from hafen.access.models import AuditEntry, Organisation  # noqa: E402
from hafen.access.policy import Actor  # noqa: E402
from hafen.catalog import apps  # noqa: E402
from hafen.config import get_settings  # noqa: E402
from hafen.controller.loop import Controller  # noqa: E402
from hafen.edge.client import FakeEdge  # noqa: E402
from hafen.engine.fake import FakeEngine  # noqa: E402
from hafen.instances import calendar, nodes, services, updates  # noqa: E402
from hafen.instances.models import (  # noqa: E402
    BackupPolicy,
    ControlPlane,
    Instance,
    InstanceSecret,
    Operation,
    OpState,
    Repository,
    Rollout,
    Snapshot,
)

ACTIVE = (OpState.PENDING, OpState.RUNNING)
LOCAL = Actor.local()


def pytest_unconfigure(config):
    from django.db import connections

    connections.close_all()
    shutil.rmtree(DATA_DIR, ignore_errors=True)


def all_image_tags() -> set[str]:
    return {tag for app in apps().values() for version in app.versions for tag in app.image_tags(version)}


def active_operations():
    return Operation.objects.filter(state__in=ACTIVE)


def converge(controller, max_passes=50, until=None):
    """Run passes until `until()` holds (default: no operation is pending or running).

    Return the number of passes it took; fail the test if it never holds.
    """
    done = until or (lambda: not active_operations().exists())
    for passes in range(1, max_passes + 1):
        controller.pass_once()
        if done():
            return passes
    stuck = [(op, op.current_step(), op.error) for op in active_operations()]
    pytest.fail(f"not converged after {max_passes} passes; active: {stuck}")


@pytest.fixture(autouse=True)
def _clean_database():
    yield
    Rollout.objects.all().delete()
    Snapshot.objects.all().delete()
    BackupPolicy.objects.all().delete()
    Repository.objects.all().delete()
    Operation.objects.all().delete()
    InstanceSecret.objects.all().delete()
    Instance.objects.all().delete()
    ControlPlane.objects.all().delete()
    AuditEntry.objects.all().delete()
    Organisation.objects.all().delete()
    User.objects.all().delete()


@pytest.fixture
def settings():
    return get_settings()


@pytest.fixture
def engine(monkeypatch):
    fake = FakeEngine()
    fake.images.update(all_image_tags(), {"hafen/postgres:15", "hafen/redis:7"})
    monkeypatch.setattr(services, "get_engine", lambda: fake)
    monkeypatch.setattr(nodes, "get_engine", lambda: fake)
    monkeypatch.setattr(updates, "get_engine", lambda: fake)
    monkeypatch.setattr(calendar, "get_engine", lambda: fake)
    return fake


@pytest.fixture
def edge(engine):
    return FakeEdge(engine)


@pytest.fixture
def controller(engine, edge, settings):
    """A controller on the fake engine and edge, with a fresh heartbeat."""
    ctl = Controller(engine, edge, settings)
    ctl.heartbeat()
    return ctl


@pytest.fixture
def access_log(settings):
    """The edge proxy's access log, empty, as the controller reads it (tests write Caddy's lines)."""
    from hafen.edge.config import ACCESS_LOG

    path = settings.edge_dir / ACCESS_LOG
    settings.edge_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(name="converge")
def converge_fixture():
    return converge


@pytest.fixture
def running_instance(controller):
    """Create an instance through the service layer and converge it to running."""

    def make(name, app="demo", **kwargs):
        controller.heartbeat()
        op = services.create_instance(LOCAL, name, app, **kwargs)
        converge(controller)
        op.refresh_from_db()
        assert op.state == OpState.SUCCEEDED, op.error
        return services.get_instance(LOCAL, name)

    return make


@pytest.fixture
def snapshot():
    """A backup of an instance as the controller leaves one that succeeded: a row with a restic id."""
    from django.utils import timezone

    def make(name, restic_id, reason="scheduled", **fields):
        instance = Instance.objects.get(name=name)
        values = {"status": "ok", "total_bytes": 52_428_800, "added_bytes": 1_048_576, "finished_at": timezone.now(),
                  **fields}
        return Snapshot.objects.create(instance=instance, instance_name=name,
                                       organisation_id=instance.organisation_id, reason=reason, restic_id=restic_id,
                                       app=instance.app, version=instance.version, domain=instance.domain, **values)

    return make


class People:
    """An operator, an admin and two members of the owning organisation ("acme"), and an outsider:
    the admin of another organisation ("globex"). Each has a write token; `reader` is a read token
    of the admin. Passwords are the user name repeated."""

    ROLES = ("operator", "admin", "member", "outsider")

    def __init__(self) -> None:
        from hafen.access import services as access
        from hafen.access.models import Membership, Role

        self.acme = Organisation.objects.create(slug="acme", name="Acme")
        self.globex = Organisation.objects.create(slug="globex", name="Globex")
        self.users = {
            "operator": User.objects.create_user("olga", password="olga" * 4, is_staff=True),
            "admin": User.objects.create_user("alice", password="alice" * 4),
            "member": User.objects.create_user("bob", password="bob" * 4),
            "reader": User.objects.create_user("carol", password="carol" * 4),
            "outsider": User.objects.create_user("mallory", password="mallory" * 4),
        }
        Membership.objects.create(user=self.users["admin"], organisation=self.acme, role=Role.ADMIN)
        Membership.objects.create(user=self.users["member"], organisation=self.acme, role=Role.MEMBER)
        Membership.objects.create(user=self.users["reader"], organisation=self.acme, role=Role.MEMBER,
                                  can_read_credentials=True)
        Membership.objects.create(user=self.users["outsider"], organisation=self.globex, role=Role.ADMIN)
        self.tokens = {
            role: access.create_token(self.actor(role), f"{role} token", "write")[1] for role in self.users
        }
        self.tokens["read"] = access.create_token(self.actor("admin"), "read only", "read")[1]

    def actor(self, role: str, via: str = "api") -> Actor:
        return Actor(user=self.users[role], via=via, source="127.0.0.1")

    def headers(self, role: str) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.tokens[role]}"}


@pytest.fixture
def people():
    return People()


@pytest.fixture
def acme_fleet(engine, people, running_instance, controller):
    """Demo 1.0 instances ant and bee of acme and cat of globex, whose updates' jobs give results."""
    from tests.unit.test_updates import SmokeRestic

    engine.job_output = SmokeRestic()
    running_instance("ant", organisation="acme")
    running_instance("bee", organisation="acme")
    running_instance("cat", organisation="globex")
    controller.heartbeat()
    return people
