"""Metrics and alerts: the generated configuration, the recipients, hafen's exporter, access to chart data."""

import json

import pytest
import yaml
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from prometheus_client import generate_latest

from hafen.access.models import AuditEntry, Membership, Role
from hafen.controller import metrics as controller_metrics
from hafen.errors import Forbidden, InvalidInput, NotFound
from hafen.instances import monitoring
from hafen.instances.models import Instance, Snapshot
from hafen.logs.models import ErrorGroup
from hafen.mail.smarthost import parse
from hafen.metrics import charts
from hafen.metrics import config as files
from hafen.metrics.clients import Alertmanager, Prometheus, Series

RULE_NAMES = {"InstanceDown", "RestartLoop", "MemoryNearLimit", "ErrorRate", "BackupFailed", "BackupMissing",
              "VerificationFailed", "VerificationMissing", "DiskNearlyFull", "CertificateExpiry",
              "ControllerNotPassing", "NewErrorKind"}


@pytest.fixture
def on(settings):
    """The settings with metrics on (the unit tier runs with them off, see conftest)."""
    return settings.model_copy(update={"metrics": True, "metrics_port": 19090})


@pytest.fixture
def metrics_on(monkeypatch, on):
    """The service layer sees an installation with metrics on."""
    monkeypatch.setattr(monitoring, "get_settings", lambda: on)
    return on


# -- generated files -------------------------------------------------------------------------------------


def test_prometheus_config_scrapes_hafen_nodes_and_itself(on):
    config = yaml.safe_load(files.prometheus(on))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"hafen", "containers", "node", "prometheus", "alertmanager"}
    assert jobs["hafen"]["static_configs"][0]["targets"] == ["127.0.0.1:19092"]
    assert jobs["containers"]["file_sd_configs"][0]["files"] == ["/etc/hafen-metrics/targets/containers.json"]
    assert jobs["containers"]["honor_labels"] is True  # the exporters' `instance` is hafen's instance
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19091"]
    assert config["rule_files"] == ["/etc/hafen-metrics/rules/*.yml"]


def test_ports_follow_the_web_port_unless_set(settings):
    derived = settings.model_copy(update={"web_port": 9000, "metrics_port": 0})
    assert (derived.prometheus_port, derived.alertmanager_port, derived.controller_metrics_port,
            derived.node_exporter_port, derived.cgroup_exporter_port) == (9010, 9011, 9012, 9013, 9014)


def test_file_sd_targets_name_every_node():
    text = files.targets([files.Target("10.0.0.2", "b"), files.Target("10.0.0.1", "a")], 9104)
    assert json.loads(text) == [{"targets": ["10.0.0.1:9104"], "labels": {"node": "a"}},
                                {"targets": ["10.0.0.2:9104"], "labels": {"node": "b"}}]


def _am(settings, url, recipients=None):
    host = parse(url) if url else None
    return yaml.safe_load(files.alertmanager(settings, recipients or files.Recipients(["ops@example.org"]), host))


@pytest.mark.parametrize("url,expected", [
    ("smtp://mail.example.org:587?tls=verify", {"require_tls": True, "tls_config": {"insecure_skip_verify": False}}),
    ("smtp://mail.example.org:587?tls=encrypt", {"require_tls": True, "tls_config": {"insecure_skip_verify": True}}),
    ("smtp://mail.example.org:25?tls=may", {"require_tls": False}),
    ("smtp://mail.example.org:25?tls=none", {"require_tls": False}),
    ("smtps://mail.example.org", {"require_tls": False, "tls_config": {"insecure_skip_verify": False}}),
])
def test_smarthost_tls_maps_onto_alertmanager(on, url, expected):
    mail = _am(on, url)["receivers"][0]["email_configs"][0]
    assert {k: mail[k] for k in expected} == expected
    assert mail.get("tls_config") == expected.get("tls_config")
    if url.startswith("smtps"):
        assert mail["smarthost"] == "mail.example.org:465"  # Alertmanager speaks TLS at once on 465


def test_smtp_password_is_a_file_never_inline(on):
    text = files.alertmanager(on, files.Recipients(["ops@example.org"]), parse("smtp://u:s3cret@mail:587?tls=verify"))
    assert "s3cret" not in text
    mail = yaml.safe_load(text)["receivers"][0]["email_configs"][0]
    assert mail["auth_username"] == "u"
    assert mail["auth_password_file"] == "/run/secrets/smtp-password"


def test_routes_send_everything_to_operators_and_an_organisations_alerts_to_its_admins(on):
    settings = on.model_copy(update={"alert_webhook_url": "http://hook.example/alerts"})
    config = _am(settings, "smtp://mail:25?tls=none",
                 files.Recipients(["ops@example.org"], {"acme": ["alice@acme.example"], "empty": []}))
    routes = config["route"]["routes"]
    assert routes[0] == {"receiver": "operators", "continue": True}
    assert routes[1] == {"receiver": "org-acme", "matchers": ['organisation="acme"'], "continue": True}
    assert len(routes) == 2  # an organisation without admins' addresses has no route
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["org-acme"]["email_configs"][0]["to"] == "alice@acme.example"
    assert receivers["operators"]["email_configs"][0]["send_resolved"] is True
    assert receivers["operators"]["webhook_configs"] == [{"url": "http://hook.example/alerts", "send_resolved": True}]
    assert "webhook_configs" not in receivers["org-acme"]  # the hook hears each alert once
    assert config["route"]["group_by"] == ["alertname", "instance"]


def test_without_a_smarthost_no_mail_is_configured(on):
    config = _am(on, "")
    assert config["receivers"] == [{"name": "operators"}]


def test_default_rules_cover_the_issue_and_for_can_be_shortened(on):
    groups = yaml.safe_load(files.rules(on))["groups"]
    rules = {r["alert"]: r for r in groups[0]["rules"]}
    assert set(rules) == RULE_NAMES
    assert rules["InstanceDown"]["for"] == "2m"
    short = yaml.safe_load(files.rules(on.model_copy(update={"alert_for": "5s"})))["groups"][0]["rules"]
    assert {r["for"] for r in short} == {"5s"}


# -- recipients ------------------------------------------------------------------------------------------


def test_recipients_are_staff_and_organisation_admins(people):
    people.users["operator"].email = "olga@hoster.example"
    people.users["operator"].save()
    people.users["admin"].email = "alice@acme.example"
    people.users["admin"].save()
    people.users["member"].email = "bob@acme.example"  # a member: not told
    people.users["member"].save()
    inactive = User.objects.create_user("gone", email="gone@acme.example", is_active=False)
    Membership.objects.create(user=inactive, organisation=people.acme, role=Role.ADMIN)
    found = controller_metrics.recipients()
    assert found.operators == ["olga@hoster.example"]
    assert found.organisations == {"acme": ["alice@acme.example"]}  # globex's admin has no address


# -- the controller's part -------------------------------------------------------------------------------


def test_reconciler_writes_files_and_runs_the_services(engine, on, people):
    people.users["operator"].email = "olga@hoster.example"
    people.users["operator"].save()
    settings = on.model_copy(update={"smtp_url": "smtp://u:pw@mail:587?tls=verify"})
    keeper = controller_metrics.MetricsReconciler(engine, settings)
    keeper.reconcile(engine.observe(settings.prefix))
    names = set(controller_metrics.services(settings.prefix))
    assert names <= set(engine.services)
    assert {f"{settings.prefix}-prometheus", f"{settings.prefix}-alertmanager"} <= set(engine.volumes)
    prometheus = engine.services[f"{settings.prefix}-prometheus"]
    assert "--web.listen-address=127.0.0.1:19090" in prometheus.command
    assert prometheus.memory_bytes and prometheus.networks[0].name == "host"
    node = engine.services[f"{settings.prefix}-node-metrics"]
    assert node.global_mode
    alertmanager = engine.services[f"{settings.prefix}-alertmanager"]
    secret = alertmanager.secrets[0].name
    assert engine.secrets[secret].data == b"pw"  # the password as a Docker secret
    directory = settings.metrics_dir
    assert "olga@hoster.example" in (directory / "alertmanager.yml").read_text()
    assert (directory / "alertmanager.yml").stat().st_mode & 0o077 == 0
    assert json.loads((directory / "targets" / "node.json").read_text())[0]["targets"][0].endswith(":19093")
    # the rules are the operator's once written: an edit stays
    rules = directory / files.RULES_FILE
    rules.write_text("groups: []\n")
    keeper.reconcile(engine.observe(settings.prefix))
    assert rules.read_text() == "groups: []\n"
    # metrics off: the services go
    off = controller_metrics.MetricsReconciler(engine, settings.model_copy(update={"metrics": False}))
    off.reconcile(engine.observe(settings.prefix))
    assert not names & set(engine.services)


def test_exporter_counts_the_edges_requests_per_instance(running_instance, engine, controller, people):
    instance = running_instance("eve", organisation="acme")
    exporter = controller_metrics.Exporter()
    obs = engine.observe(controller.settings.prefix)
    exporter.observe_pass(0.05, obs, Instance.objects.select_related("organisation"), {})
    ts = exporter.started + 1
    for status in (200, 200, 502):
        exporter.count({"ts": ts, "request": {"host": instance.domain}, "status": status, "duration": 0.02})
    exporter.count({"ts": ts, "request": {"host": "unknown.localhost"}, "status": 200})  # no instance: not counted
    exporter.count({"ts": exporter.started - 60, "request": {"host": instance.domain}, "status": 200})  # old line
    text = generate_latest(exporter.registry).decode()
    assert 'hafen_edge_requests_total{code="200",instance="eve",organisation="acme"} 2.0' in text
    assert 'hafen_edge_requests_total{code="502",instance="eve",organisation="acme"} 1.0' in text
    assert 'hafen_edge_request_duration_seconds_count{instance="eve"} 3.0' in text
    assert 'hafen_instance_up{instance="eve",organisation="acme"} 1.0' in text
    assert 'hafen_instance_info{instance="eve",organisation="acme"} 1.0' in text
    assert 'hafen_instance_running_replicas{instance="eve",service="web"} 1.0' in text
    assert "hafen_controller_pass_seconds_count 1.0" in text
    assert "hafen_controller_last_pass_timestamp_seconds" in text


def test_exporter_reports_backups_and_operations(running_instance, snapshot):
    running_instance("eve")
    snapshot("eve", "aaa", verification="verified")
    snapshot("eve", "bbb", status="failed")
    text = generate_latest(controller_metrics.Exporter().registry).decode()
    assert 'hafen_backup_last_failed{instance="eve",organisation=""} 1.0' in text
    assert 'hafen_verification_last_failed{instance="eve",organisation=""} 0.0' in text
    assert 'hafen_operations{kind="create",state="succeeded"} 1.0' in text
    success = [line for line in text.splitlines() if line.startswith("hafen_backup_last_success_timestamp")]
    assert len(success) == 1 and float(success[0].split()[-1]) > 1.7e9
    assert Snapshot.objects.count() == 2


def test_error_kinds_come_from_the_instances_grouped_errors():
    now = timezone.now()
    for instance, signature in (("eve", "a"), ("eve", "b"), ("", "c")):  # "": hafen's own services
        ErrorGroup.objects.create(instance=instance, org="acme", signature=signature, kind="ValueError",
                                  first_seen=now, last_seen=now)
    assert controller_metrics.error_kinds() == [("eve", "acme", 2)]


# -- charts, the fleet view and silences, with access checks ---------------------------------------------


@pytest.fixture
def prom(monkeypatch, metrics_on):
    """Prometheus's answers recorded: each range query gets one series of two points."""
    asked: list[str] = []

    def fake_range(self, query, start, end, step):
        asked.append(query)
        return [Series({}, [(start, 1.0), (end, 2.0)])]

    def fake_instant(self, query):
        asked.append(query)
        return [({"instance": "eve"}, 42.0)]

    monkeypatch.setattr(Prometheus, "range", fake_range)
    monkeypatch.setattr(Prometheus, "instant", fake_instant)
    return asked


@pytest.fixture
def eve(people, running_instance):
    running_instance("eve", organisation="acme")
    running_instance("gus", organisation="globex")
    return people


@pytest.mark.parametrize("role,allowed", [("operator", True), ("admin", True), ("member", True),
                                          ("outsider", False)])
def test_chart_data_only_for_those_who_see_the_instance(eve, prom, role, allowed):
    if not allowed:
        with pytest.raises(NotFound):
            monitoring.chart_data(eve.actor(role), "eve", "1h")
        assert prom == []  # nothing was asked of Prometheus
        return
    data = monitoring.chart_data(eve.actor(role), "eve", "1d")
    assert [c["key"] for c in data["charts"]] == ["cpu", "memory", "requests", "websockets", "replicas"]
    assert all('instance="eve"' in q for q in prom)
    assert data["charts"][0]["series"]["web"][1][1] == 2.0


def test_chart_range_is_checked(eve, prom):
    with pytest.raises(InvalidInput):
        monitoring.chart_data(eve.actor("operator"), "eve", "1y")


def test_fleet_is_narrowed_to_a_customers_instances(eve, prom):
    monitoring.fleet(eve.actor("admin"))
    assert prom and all('instance=~"^(eve)$"' in q for q in prom)
    prom.clear()
    monitoring.fleet(eve.actor("operator"))
    assert not any("instance=~" in q for q in prom)


def test_api_chart_data_and_svg_page(eve, prom, controller):
    admin, outsider = Client(), Client()
    ok = admin.get("/api/v1/instances/eve/metrics?range=1h", **eve.headers("admin"))
    assert ok.status_code == 200, ok.content
    assert ok.json()["charts"][1]["series"]["limit"]
    assert outsider.get("/api/v1/instances/eve/metrics", **eve.headers("outsider")).status_code == 404
    assert admin.get("/api/v1/instances/eve/metrics?range=5y", **eve.headers("admin")).status_code == 400
    web = Client()
    web.force_login(eve.users["member"])
    page = web.get("/instances/eve/charts?range=1w")
    assert page.status_code == 200
    assert page.content.count(b"<svg") == 5 and b"<polyline" in page.content
    web.force_login(eve.users["outsider"])
    assert web.get("/instances/eve/charts").status_code == 404


def test_silence_needs_an_admin_of_the_instance(eve, monkeypatch, metrics_on):
    made = []
    monkeypatch.setattr(Alertmanager, "silence", lambda self, name, duration, author, comment: made.append(
        (name, duration.total_seconds(), author)) or "s1")
    with pytest.raises(Forbidden):
        monitoring.silence(eve.actor("member"), "eve", "2h")
    with pytest.raises(NotFound):
        monitoring.silence(eve.actor("outsider"), "eve", "2h")
    with pytest.raises(InvalidInput):
        monitoring.silence(eve.actor("admin"), "eve", "soon")
    assert monitoring.silence(eve.actor("admin"), "eve", "2h", "upgrade")["id"] == "s1"
    assert made == [("eve", 7200.0, "alice")]
    entries = list(AuditEntry.objects.filter(action="silence").order_by("id").values_list("actor", "result"))
    assert entries == [("bob", "refused"), ("mallory", "refused"), ("alice", "refused"), ("alice", "ok")]


def test_alerts_of_other_organisations_are_hidden(eve, monkeypatch, metrics_on):
    firing = [{"labels": {"alertname": "InstanceDown", "instance": "eve", "organisation": "acme"}},
              {"labels": {"alertname": "InstanceDown", "instance": "gus", "organisation": "globex"}},
              {"labels": {"alertname": "DiskNearlyFull", "instance": "10.0.0.1:9103"}}]
    monkeypatch.setattr(Alertmanager, "alerts", lambda self: firing)
    assert [a["instance"] for a in monitoring.alerts(eve.actor("admin"))] == ["eve"]
    assert len(monitoring.alerts(eve.actor("operator"))) == 3


def test_svg_charts_escape_labels():
    svg = charts.line_chart("<b>", [("a<script>", Series({}, [(0, 1), (60, 3)]))], "bytes", 0, 60)
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<polyline" in svg
    bars = charts.bar_chart("top", [("eve", 50.0)], "%", 100.0)
    assert "eve" in bars and "50.0 %" in bars


def test_with_metrics_off_the_api_says_so(eve):
    response = Client().get("/api/v1/instances/eve/metrics", **eve.headers("admin"))
    assert response.status_code == 409
    assert "HAFEN_METRICS=false" in response.json()["error"]["message"]


def test_prometheus_that_does_not_answer_is_a_503(eve, metrics_on):
    response = Client().get("/api/v1/alerts", **eve.headers("operator"))  # nothing listens on 19091
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "metrics_unavailable"
