from datetime import timedelta

import pytest
from django.utils import timezone

from hafen import crypto
from hafen.access.models import Organisation
from hafen.access.policy import Actor
from hafen.errors import Conflict, ControlPlaneDown, EngineUnavailable, InvalidInput, NotFound
from hafen.instances import services
from hafen.instances.models import ControlPlane, Desired, Instance, InstanceSecret, Operation, SecretStatus

LOCAL = Actor.local()


def rows():
    return Instance.objects.count(), Operation.objects.count(), InstanceSecret.objects.count()


def engine_objects(engine):
    return {**engine.services, **engine.networks, **engine.volumes, **engine.secrets}


@pytest.mark.parametrize(
    ("name", "app", "kwargs", "match"),
    [
        ("Bad_Name", "demo", {}, "invalid name"),
        ("ab", "demo", {}, "invalid name"),
        ("eve", "nope", {}, "unknown app 'nope'"),
        ("eve", "demo", {"version": "0.1"}, "unknown version '0.1'"),
        ("eve", "demo", {"domain": "not a domain"}, "invalid domain"),
        ("eve", "demo", {"domain": "localhost"}, "invalid domain"),
        ("eve", "demo", {"size": "huge"}, "unknown size 'huge'"),
    ],
)
def test_bad_input_writes_and_creates_nothing(controller, engine, name, app, kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        services.create_instance(LOCAL, name, app, **kwargs)
    assert rows() == (0, 0, 0)
    assert engine_objects(engine) == {}
    assert not [c for c in engine.calls if c.startswith(("create_", "apply_"))]


def test_create_writes_instance_secrets_and_operation(controller, engine):
    Organisation.objects.create(slug="acme", name="Acme")
    op = services.create_instance(LOCAL, "eve", "openslides", size="medium", organisation="acme")
    instance = Instance.objects.get(name="eve")
    assert (op.kind, op.state, op.instance_id, op.instance_name) == ("create", "pending", instance.pk, "eve")
    assert instance.domain == "eve.localhost"
    assert instance.version == "3.3"
    assert instance.replicas == 2  # the medium size's web replicas
    assert instance.organisation.slug == "acme"
    assert instance.desired_state == Desired.RUNNING
    assert instance.secret_versions() == {"db_password": 1, "secret_key": 1, "admin_password": 1, "smtp_password": 1}
    # the service layer only writes: the controller does the work
    assert engine_objects(engine) == {}


def test_domain_is_normalised(controller, engine):
    services.create_instance(LOCAL, "eve", "demo", domain="Event.Example.ORG.")
    assert Instance.objects.get(name="eve").domain == "event.example.org"


def test_duplicate_name_is_a_conflict(controller, engine):
    services.create_instance(LOCAL, "eve", "demo")
    before = rows()
    with pytest.raises(Conflict, match="named 'eve' exists"):
        services.create_instance(LOCAL, "eve", "openslides", domain="other.example.org")
    assert rows() == before


def test_taken_domain_is_a_conflict(controller, engine):
    services.create_instance(LOCAL, "one", "demo", domain="shared.example.org")
    before = rows()
    with pytest.raises(Conflict, match="shared.example.org is taken"):
        services.create_instance(LOCAL, "two", "demo", domain="Shared.Example.org.")
    assert rows() == before


def test_default_domain_of_another_instance_is_taken(controller, engine):
    services.create_instance(LOCAL, "one", "demo", domain="two.localhost")
    with pytest.raises(Conflict, match="two.localhost"):
        services.create_instance(LOCAL, "two", "demo")


def test_missing_image_tells_how_to_build_it(controller, engine):
    engine.images.discard("hafen/demo:1.0")
    with pytest.raises(InvalidInput, match="hafen images build") as info:
        services.create_instance(LOCAL, "eve", "demo")
    assert "hafen/demo:1.0" in str(info.value)
    assert rows() == (0, 0, 0)


def test_engine_down_at_create_writes_nothing(controller, engine):
    engine.down = True
    with pytest.raises(EngineUnavailable):
        services.create_instance(LOCAL, "eve", "demo")
    assert rows() == (0, 0, 0)


def test_no_heartbeat_is_control_plane_down_and_writes_nothing(engine):
    assert not ControlPlane.objects.exists()
    with pytest.raises(ControlPlaneDown, match="hafen up"):
        services.create_instance(LOCAL, "eve", "demo")
    assert rows() == (0, 0, 0)


def test_stale_heartbeat_is_control_plane_down(controller, engine):
    stale = timezone.now() - services.HEARTBEAT_STALE - timedelta(seconds=1)
    ControlPlane.objects.filter(pk=1).update(beat_at=stale)
    with pytest.raises(ControlPlaneDown):
        services.create_instance(LOCAL, "eve", "demo")
    assert rows() == (0, 0, 0)


def test_change_without_heartbeat_writes_nothing(controller, engine):
    services.create_instance(LOCAL, "eve", "demo")
    ControlPlane.objects.all().delete()
    with pytest.raises(ControlPlaneDown):
        services.stop(LOCAL, "eve")
    assert Instance.objects.get(name="eve").desired_state == Desired.RUNNING
    assert Operation.objects.count() == 1


def test_secrets_are_stored_encrypted(controller, engine):
    services.create_instance(LOCAL, "eve", "openslides")
    secrets = {s.name: s for s in InstanceSecret.objects.filter(instance__name="eve")}
    assert set(secrets) == {"db_password", "secret_key", "admin_password", "smtp_password"}
    plain = {name: crypto.decrypt(s.ciphertext) for name, s in secrets.items()}
    for name, secret in secrets.items():
        assert plain[name]
        assert plain[name] not in secret.ciphertext
    assert len(set(plain.values())) == 4
    assert len(plain["admin_password"]) == 20
    assert len(plain["secret_key"]) > len(plain["admin_password"])

    creds = services.credentials(LOCAL, "eve")
    assert creds.username == "admin"
    assert creds.password == plain["admin_password"]


def test_each_instance_gets_its_own_secrets(controller, engine):
    services.create_instance(LOCAL, "one", "demo")
    services.create_instance(LOCAL, "two", "demo")
    assert services.credentials(LOCAL, "one").password != services.credentials(LOCAL, "two").password


def test_new_admin_password_writes_a_new_version(controller, engine):
    services.create_instance(LOCAL, "eve", "demo")
    old = services.credentials(LOCAL, "eve").password
    op, password = services.new_admin_password(LOCAL, "eve")
    assert op.kind == "passwd"
    assert password != old
    # pending until the app has it: the credentials are still the ones the app has
    assert Instance.objects.get(name="eve").secret_versions()["admin_password"] == 1
    assert Instance.objects.get(name="eve").secret_versions(op)["admin_password"] == 2
    assert services.credentials(LOCAL, "eve").password == old
    secret = InstanceSecret.objects.get(instance__name="eve", name="admin_password", version=2)
    assert (secret.status, secret.operation_id) == (SecretStatus.PENDING, op.pk)
    assert crypto.decrypt(secret.ciphertext) == password


@pytest.mark.parametrize(
    "action",
    [
        services.stop,
        services.restart,
        lambda actor, name: services.scale(actor, name, 2),
        services.new_admin_password,
    ],
    ids=["stop", "restart", "scale", "passwd"],
)
def test_actions_on_a_deleted_instance_are_conflicts(controller, engine, action):
    services.create_instance(LOCAL, "eve", "demo")
    services.delete(LOCAL, "eve")
    before = rows()
    with pytest.raises(Conflict, match="is deleted"):
        action(LOCAL, "eve")
    assert rows() == before
    assert Instance.objects.get(name="eve").desired_state == Desired.DELETED


@pytest.mark.parametrize("action", [services.start, services.delete], ids=["start", "delete"])
def test_actions_on_an_instance_being_erased_are_conflicts(controller, engine, action):
    services.create_instance(LOCAL, "eve", "demo")
    services.erase(LOCAL, "eve")
    with pytest.raises(Conflict, match="being erased"):
        action(LOCAL, "eve")
    assert Instance.objects.get(name="eve").desired_state == Desired.ERASED


@pytest.mark.parametrize("action", [services.restart, services.new_admin_password], ids=["restart", "passwd"])
def test_actions_that_need_a_running_instance(controller, engine, action):
    services.create_instance(LOCAL, "eve", "demo")
    services.stop(LOCAL, "eve")
    with pytest.raises(Conflict, match="hafen start eve|start it"):
        action(LOCAL, "eve")


def test_start_brings_back_a_deleted_instance(controller, engine):
    services.create_instance(LOCAL, "eve", "demo")
    services.delete(LOCAL, "eve")
    op = services.start(LOCAL, "eve")
    assert op.kind == "start"
    assert Instance.objects.get(name="eve").desired_state == Desired.RUNNING


def test_scale_out_of_bounds_changes_nothing(controller, engine):
    services.create_instance(LOCAL, "eve", "demo")
    with pytest.raises(InvalidInput, match="between 0 and"):
        services.scale(LOCAL, "eve", 33)
    assert Instance.objects.get(name="eve").replicas == 1
    assert Operation.objects.count() == 1


def test_restart_counts_up(controller, engine):
    services.create_instance(LOCAL, "eve", "demo")
    services.restart(LOCAL, "eve")
    services.restart(LOCAL, "eve")
    assert Instance.objects.get(name="eve").restart_count == 2


@pytest.mark.parametrize(
    "action",
    [
        services.get_instance,
        services.start,
        services.stop,
        services.delete,
        services.erase,
        services.credentials,
        services.restart,
        services.new_admin_password,
    ],
)
def test_unknown_instance_is_not_found(controller, engine, action):
    with pytest.raises(NotFound, match="no instance named 'nosuch'"):
        action(LOCAL, "nosuch")


def test_describe_and_url(controller, engine):
    services.create_instance(LOCAL, "eve", "demo")
    data = services.describe(services.get_instance(LOCAL, "eve"))
    assert data["url"] == "http://eve.localhost:18080/"
    assert data["state"] == "pending"
    assert data["replicas"] == {"desired": 1, "running": 0, "set": 1, "autoscaled": None, "floor": None}
    assert "password" not in str(data).lower()


def test_logs_of_an_unknown_service_is_invalid_input(controller, engine):
    services.create_instance(LOCAL, "eve", "demo")
    with pytest.raises(InvalidInput, match="no service 'nope'"):
        services.logs(LOCAL, "eve", "nope")


def test_logs_of_the_web_service(controller, engine, running_instance):
    running_instance("eve")
    engine.logs["unit-eve_web"] = ["one", "two", "three"]
    assert list(services.logs(LOCAL, "eve", None, tail=2)) == ["two", "three"]
    assert list(services.logs(LOCAL, "eve", "web")) == ["one", "two", "three"]
