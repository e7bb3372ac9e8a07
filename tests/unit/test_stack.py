import json
from dataclasses import asdict, replace

import pytest
import yaml
from pydantic import ValidationError

from hafen import crypto
from hafen.catalog import StackTemplate, compile_template, get_app
from hafen.engine.base import LABEL_INSTANCE, LABEL_PREFIX, LABEL_SERVICE, Mount, NetworkRef, SecretRef
from hafen.errors import InvalidInput
from hafen.instances import naming
from hafen.instances.models import InstanceSecret
from hafen.instances.stack import StackInput, memory_bytes, render

MiB = 1024**2
GiB = 1024**3
VERSIONS = {
    "openslides": {"db_password": 1, "secret_key": 2, "admin_password": 3, "smtp_password": 1},
    "demo": {"db_password": 1, "admin_password": 2, "smtp_password": 1},
}


def stack_input(app="openslides", **overrides):
    app_def = get_app(app)
    data = StackInput(
        prefix="unit",
        name="ev",
        domain="ev.localhost",
        app=app_def,
        version=app_def.default_version,
        size="small",
        replicas=app_def.sizes["small"].web_replicas,
        secret_versions=dict(VERSIONS[app]),
    )
    return replace(data, **overrides)


@pytest.mark.parametrize("app", ["openslides", "demo"])
def test_service_names_and_waves(app):
    specs, waves = render(stack_input(app))
    assert set(specs) == {"db", "redis", "setup", "web"}
    assert {svc: spec.name for svc, spec in specs.items()} == {
        "db": "unit-ev_db",
        "redis": "unit-ev_redis",
        "setup": "unit-ev_setup",
        "web": "unit-ev_web",
    }
    assert waves == [["db", "redis"], ["setup"], ["web"]]


@pytest.mark.parametrize("app", ["openslides", "demo"])
def test_labels_name_prefix_instance_and_service(app):
    specs, _ = render(stack_input(app))
    for svc, spec in specs.items():
        assert spec.labels[LABEL_PREFIX] == "unit"
        assert spec.labels[LABEL_INSTANCE] == "ev"
        assert spec.labels[LABEL_SERVICE] == svc
    assert specs["setup"].job is True
    assert not any(specs[svc].job for svc in ("db", "redis", "web"))


@pytest.mark.parametrize("app", ["openslides", "demo"])
def test_only_web_joins_its_instances_edge_network(app):
    specs, _ = render(stack_input(app))
    internal = "unit-ev_internal"
    # on its instance's own edge network the web service answers to `{domain}.{route suffix}`:
    # that is how the proxy finds it, and no other name leads there
    # (and its own mail network, which only it and the mail relay join)
    assert specs["web"].networks == [
        NetworkRef(internal, aliases=("web",)), NetworkRef("unit-ev_edge", aliases=("ev.localhost.unit-route",)),
        NetworkRef("unit-ev_mail"),
    ]
    for svc in ("db", "redis", "setup"):
        assert specs[svc].networks == [NetworkRef(internal, aliases=(svc,))]
    edge_users = [svc for svc, spec in specs.items() if any(n.name.endswith("_edge") for n in spec.networks)]
    assert edge_users == ["web"]
    # no service of an instance joins the shared edge network (the proxy's and the status server's)
    assert not [svc for svc, spec in specs.items() if any(n.name == "unit-edge" for n in spec.networks)]


def test_route_suffix_is_no_network_name():
    """Docker's DNS answers `name.NETWORK` too: the suffix must name none of hafen's networks."""
    suffix = naming.route_suffix("unit")
    assert "." not in suffix
    assert suffix not in {naming.edge_network("unit"), naming.backup_network("unit")}
    for instance in ("route", "a", "edge"):
        assert suffix not in {naming.internal_network("unit", instance), naming.instance_edge_network("unit", instance)}


def test_secrets_are_referenced_by_versioned_names_with_logical_targets():
    specs, _ = render(stack_input("openslides"))
    assert specs["db"].secrets == [SecretRef("unit-ev_db_password_v1", "db_password")]
    assert specs["setup"].secrets == [
        SecretRef("unit-ev_db_password_v1", "db_password"),
        SecretRef("unit-ev_secret_key_v2", "secret_key"),
        SecretRef("unit-ev_admin_password_v3", "admin_password"),
    ]
    # the web service never sees the admin password; it has its login at the mail relay
    assert specs["web"].secrets == [
        SecretRef("unit-ev_db_password_v1", "db_password"),
        SecretRef("unit-ev_secret_key_v2", "secret_key"),
        SecretRef("unit-ev_smtp_password_v1", "smtp_password"),
    ]
    assert specs["redis"].secrets == []


def test_unknown_secret_in_template_is_invalid_input():
    with pytest.raises(InvalidInput, match="unknown secrets: secret_key"):
        render(stack_input("openslides", secret_versions={"db_password": 1, "admin_password": 1}))


def test_volumes_are_named_per_instance_and_mounted():
    specs, _ = render(stack_input("openslides"))
    assert specs["db"].mounts == [Mount("unit-ev_db", "/var/lib/postgresql/data")]
    assert specs["web"].mounts == [Mount("unit-ev_media", "/data/media")]
    assert specs["setup"].mounts == [Mount("unit-ev_media", "/data/media")]
    assert specs["redis"].mounts == []
    assert all(m.kind == "volume" for spec in specs.values() for m in spec.mounts)


def test_demo_volumes():
    specs, _ = render(stack_input("demo"))
    assert specs["db"].mounts == [Mount("unit-ev_db", "/var/lib/postgresql/data")]
    assert specs["web"].mounts == [Mount("unit-ev_media", "/data/media")]


@pytest.mark.parametrize(
    ("size", "web", "db"),
    [("small", 1 * GiB, 512 * MiB), ("medium", 1536 * MiB, 1 * GiB), ("large", 2 * GiB, 2 * GiB)],
)
def test_memory_limits_follow_the_size(size, web, db):
    specs, _ = render(stack_input("openslides", size=size))
    assert specs["web"].memory_bytes == web
    assert specs["db"].memory_bytes == db
    assert specs["redis"].memory_bytes == 256 * MiB


def test_cpu_limits_follow_the_size():
    specs, _ = render(stack_input("openslides", size="medium"))
    assert specs["web"].nano_cpus == 2_000_000_000
    assert specs["db"].nano_cpus == 1_500_000_000


def test_unknown_size_is_invalid_input():
    with pytest.raises(InvalidInput, match="unknown size 'huge'"):
        render(stack_input("demo", size="huge"))


def test_replicas_apply_to_the_web_service_only():
    specs, _ = render(stack_input("openslides", replicas=5))
    assert specs["web"].replicas == 5
    assert specs["db"].replicas == specs["redis"].replicas == specs["setup"].replicas == 1


@pytest.mark.parametrize("app", ["openslides", "demo"])
def test_stopped_gives_zero_replicas_to_every_service_but_not_to_the_job(app):
    """A job's spec does not follow the running state: a queued stop does not disturb a running job."""
    specs, _ = render(stack_input(app, running=False, replicas=3))
    assert {svc: spec.replicas for svc, spec in specs.items()} == {"db": 0, "redis": 0, "setup": 1, "web": 0}
    running, _ = render(stack_input(app, running=True, replicas=3))
    assert specs["setup"].digest() == running["setup"].digest()


def test_env_is_rendered_from_the_template():
    specs, _ = render(stack_input("openslides", name="my-event"))
    assert specs["setup"].env == {"DB_HOST": "db", "REDIS_HOST": "redis", "INSTANCE_NAME": "my-event",
                                  "HAFEN_SETUP": "1"}
    # the web service's mail settings: the relay, its login and sender (the domain of HAFEN_MAIL_FROM)
    assert specs["web"].env == {"DB_HOST": "db", "REDIS_HOST": "redis", "INSTANCE_NAME": "my-event",
                                "EMAIL_HOST": "mail", "EMAIL_PORT": "25", "EMAIL_HOST_USER": "my-event",
                                "DEFAULT_FROM_EMAIL": "my-event@localhost"}
    assert specs["db"].env == {"POSTGRES_USER": "openslides", "POSTGRES_DB": "openslides"}


def test_image_follows_the_version():
    specs, _ = render(stack_input("demo", version="1.0"))
    assert specs["web"].image == specs["setup"].image == "hafen/demo:1.0"


def test_env_and_specs_carry_no_secret_values(running_instance, engine):
    """Secrets reach the services only as Docker secrets, never through env, labels or commands."""
    instance = running_instance("leak", app="openslides")
    plaintexts = [crypto.decrypt(s.ciphertext) for s in InstanceSecret.objects.filter(instance=instance)]
    assert len(plaintexts) == 4
    specs = [spec for spec in engine.services.values() if spec.labels.get(LABEL_INSTANCE) == "leak"]
    assert len(specs) == 4
    for spec in specs:
        text = json.dumps(asdict(spec))
        for plaintext in plaintexts:
            assert plaintext not in text
    # ...while the Docker secrets hold exactly those values
    stored = [o.data.decode() for n, o in engine.secrets.items() if n.startswith("unit-leak_")]
    assert sorted(stored) == sorted(plaintexts)


def test_template_digest_ignores_replicas():
    one, _ = render(stack_input("openslides", replicas=1))
    three, _ = render(stack_input("openslides", replicas=3))
    assert one["web"].template_digest() == three["web"].template_digest()
    assert one["web"].digest() != three["web"].digest()


def test_restart_changes_the_web_template_only():
    before, _ = render(stack_input("openslides", restart=0))
    after, _ = render(stack_input("openslides", restart=1))
    assert before["web"].template_digest() != after["web"].template_digest()
    for svc in ("db", "redis", "setup"):
        assert before[svc].digest() == after[svc].digest()


def test_job_run_changes_the_setup_job_only():
    first, _ = render(stack_input("demo", job_run="1"))
    second, _ = render(stack_input("demo", job_run="2"))
    assert first["setup"].digest() != second["setup"].digest()
    for svc in ("db", "redis", "web"):
        assert first[svc].digest() == second[svc].digest()


def test_new_secret_version_changes_the_template():
    before, _ = render(stack_input("demo"))
    after, _ = render(stack_input("demo", secret_versions={"db_password": 2, "admin_password": 2, "smtp_password": 1}))
    assert before["web"].template_digest() != after["web"].template_digest()
    assert before["redis"].digest() == after["redis"].digest()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * MiB),
        ("1G", GiB),
        ("64m", 64 * MiB),
        ("2048K", 2 * MiB),
        ("1024", 1024),
        ("256MB", 256 * MiB),
        (" 1g ", GiB),
    ],
)
def test_memory_bytes(text, expected):
    assert memory_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "M", "1.5G", "1T", "-1M", "12 M", "lots"])
def test_memory_bytes_rejects_nonsense(text):
    with pytest.raises(InvalidInput, match="not a memory size"):
        memory_bytes(text)


# Names YAML 1.1 reads as null or booleans when unquoted ("no" and "on" are too short to name an
# instance, but a template must not depend on that), and the longest valid name.
YAML_WORDS = ["null", "yes", "no", "on", "off", "true", "false", "a" + "-b" * 15 + "c"]


@pytest.mark.parametrize("app", ["openslides", "demo"])
@pytest.mark.parametrize("name", YAML_WORDS)
def test_instance_name_reaches_the_services_as_the_string_it_is(app, name):
    specs, _ = render(stack_input(app, name=name, domain=f"{name}.localhost"))
    named = {svc: spec.env["INSTANCE_NAME"] for svc, spec in specs.items() if "INSTANCE_NAME" in spec.env}
    assert set(named) == {"setup", "web"}
    for value in named.values():
        assert type(value) is str and value == name
    assert specs["web"].image == f"hafen/{app}:{get_app(app).default_version}"


def test_the_longest_name_is_a_valid_name():
    from hafen.instances import validation

    assert len(YAML_WORDS[-1]) == 32 and validation.name(YAML_WORDS[-1])


@pytest.mark.parametrize("app", ["openslides", "demo"])
def test_numbers_from_the_catalogue_keep_their_types(app):
    app_def = get_app(app)
    size = app_def.sizes["large"]
    stack = app_def.render(name="yes", version=app_def.default_version, size=size, replicas=3, app=app_def)
    web = stack.services["web"]
    assert (web.replicas, web.memory, web.cpus) == (3, size.web_memory, size.web_cpus)
    assert (stack.services["db"].memory, stack.services["db"].cpus) == (size.db_memory, size.db_cpus)


@pytest.mark.parametrize("line", [
    "    image: hafen/demo:{{ version }}",
    '      INSTANCE_NAME: "{{ name }}"',
    "    command: [run, {{ name }}]",
    "    memory: {{ size.web_memory }}M",
])
def test_an_interpolation_inside_a_value_is_refused(line):
    with pytest.raises(InvalidInput, match="whole value"):
        compile_template(f"services:\n  web:\n{line}\n", "t.yaml.j2")


def test_every_interpolation_renders_as_a_quoted_string():
    template = compile_template('a: {{ x }}\nb:\n  - {{ "pre:" ~ x }}  # note\nc: {{ n }}\n', "t.yaml.j2")
    assert yaml.safe_load(template.render(x='off"\n: [', n=3)) == {"a": 'off"\n: [', "b": ['pre:off"\n: ['],
                                                                    "c": "3"}


def test_an_environment_value_yaml_did_not_read_as_a_string_is_refused():
    with pytest.raises(ValidationError, match="quote the values of FLAG"):
        StackTemplate.model_validate({"services": {"web": {"image": "x", "environment": {"FLAG": True}}}})


def test_an_instance_named_null_runs_with_its_name(running_instance, engine):
    running_instance("null")
    specs = [spec for spec in engine.services.values() if spec.labels.get(LABEL_INSTANCE) == "null"]
    assert sorted(spec.env.get("INSTANCE_NAME", "-") for spec in specs) == ["-", "-", "null", "null"]
