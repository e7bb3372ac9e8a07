"""Keep Prometheus, Alertmanager and the node exporters running, and export hafen's own metrics.

Prometheus and Alertmanager run on the controller's node in the host's network namespace, listening on
its loopback only: they reach the controller's exporter (also loopback only: that is /metrics'
protection) and each other there, and the node exporters at each node's swarm address, which the
controller writes into a file_sd file. Their configuration lives in the data directory's metrics/; the
controller rewrites it when its inputs change (the recipients are the control plane's users) and asks
the service to reload.

hafen's exporter (prometheus_client, a thread of the controller) serves what the controller knows:
the instances' state and replicas from each pass's observation, the edge's requests per instance from
the access log it reads anyway, the operations, backups and verifications from the database at scrape
time, and the edge's certificates.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from django.contrib.auth import get_user_model
from django.db import close_old_connections
from django.db.models import Count, Max
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hafen.access import services as access
from hafen.access.models import Membership, Organisation, Role
from hafen.config import Settings
from hafen.engine.base import LABEL_ROLE, Engine, Mount, NetworkRef, Observation, SecretRef, ServiceSpec
from hafen.errors import EngineError, HafenError
from hafen.instances import naming
from hafen.instances.models import Desired, Instance, Operation, Snapshot, SnapshotStatus, State, Verification
from hafen.logs import groups
from hafen.mail import smarthost as mail
from hafen.metrics import config as files

log = logging.getLogger("hafen.metrics")

ROLE_METRICS = "metrics"
PROMETHEUS_IMAGE = "hafen/prometheus:1"
ALERTMANAGER_IMAGE = "hafen/alertmanager:1"
NODE_IMAGE = "hafen/node-metrics:1"
# How often the recipients are read again from the users (a change reaches Alertmanager that late).
RECIPIENTS_EVERY = 30.0
CERTIFICATES_EVERY = 600.0
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def prometheus_service(prefix: str) -> str:
    return f"{prefix}-prometheus"


def alertmanager_service(prefix: str) -> str:
    return f"{prefix}-alertmanager"


def node_service(prefix: str) -> str:
    return f"{prefix}-node-metrics"


def services(prefix: str) -> tuple[str, ...]:
    return prometheus_service(prefix), alertmanager_service(prefix), node_service(prefix)


# -- hafen's exporter --------------------------------------------------------------------------------


@dataclass
class InstanceRow:
    name: str
    organisation: str
    up: int | None  # None: not meant to run (stopped, sleeping, deleted)
    replicas: dict[str, tuple[int, int]]  # service: (desired, running)
    open_requests: int


class Exporter(Collector):
    """hafen's metrics, served on the loopback by a thread of the controller."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("hafen_edge_requests", "Requests the edge finished, by instance and status code",
                                ["instance", "organisation", "code"], registry=self.registry)
        self.latency = Histogram("hafen_edge_request_duration_seconds", "Time the edge took for a request",
                                 ["instance"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.pass_seconds = Histogram("hafen_controller_pass_seconds", "Time a controller pass took",
                                      buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.registry.register(self)
        self.started = time.time()
        self.last_pass = 0.0
        self.rows: list[InstanceRow] = []
        self.hosts: dict[str, tuple[str, str]] = {}  # domain: (instance, organisation)
        self.certificates: dict[str, float] = {}
        self.edge_dir: Path | None = None
        self._certificates_at = -CERTIFICATES_EVERY
        self._server: Any = None

    def serve(self, port: int) -> None:
        if self._server is None:
            self._server = start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            server, _thread = self._server
            server.shutdown()
            self._server = None

    # what the edge saw (called by the access log's reader, in its thread)
    def count(self, entry: dict[str, Any]) -> None:
        try:
            host, ts = str(entry["request"]["host"]), float(entry["ts"])
        except (KeyError, TypeError, ValueError):
            return
        if ts < self.started:  # what the log held before this controller started is not counted again
            return
        owner = self.hosts.get(host.rsplit(":", 1)[0])
        if owner is None:
            return
        instance, organisation = owner
        self.requests.labels(instance, organisation, str(entry.get("status", 0))).inc()
        duration = entry.get("duration")
        if isinstance(duration, int | float):
            self.latency.labels(instance).observe(float(duration))

    def observe_pass(self, seconds: float, obs: Observation, instances: Iterable[Instance],
                     open_requests: dict[str, int] | None) -> None:
        self.pass_seconds.observe(seconds)
        self.last_pass = time.time()
        self.rows, hosts = [], {}
        for instance in instances:
            org = instance.organisation.slug if instance.organisation is not None else ""
            hosts[instance.domain] = (instance.name, org)
            current = obs.services_of(instance.name)
            replicas = {svc: (state.replicas, state.running) for svc, state in current.items() if not state.job}
            web = current.get("web") or next((s for n, s in current.items() if n.endswith("web")), None)
            meant = instance.desired_state == Desired.RUNNING and instance.state in (State.RUNNING, State.ERROR) \
                and not instance.sandbox
            up = None if not meant else int(web is not None and web.running > 0)
            addresses = {f"{a}:8000" for t in (web.tasks if web else []) for a in t.addresses}
            opened = sum(n for a, n in (open_requests or {}).items() if a in addresses)
            self.rows.append(InstanceRow(instance.name, org, up, replicas, opened))
        self.hosts = hosts

    # the collector: asked at each scrape
    def collect(self) -> Iterator[Metric]:
        last = GaugeMetricFamily("hafen_controller_last_pass_timestamp_seconds", "When the controller last passed")
        last.add_metric([], self.last_pass)
        yield last
        info = GaugeMetricFamily("hafen_instance_info", "An instance and its organisation", labels=[
            "instance", "organisation"])
        up = GaugeMetricFamily("hafen_instance_up", "1 if an instance meant to run has a healthy web replica",
                               labels=["instance", "organisation"])
        desired = GaugeMetricFamily("hafen_instance_replicas", "Replicas a service should have",
                                    labels=["instance", "service"])
        running = GaugeMetricFamily("hafen_instance_running_replicas", "Replicas of a service running healthy",
                                    labels=["instance", "service"])
        opened = GaugeMetricFamily("hafen_edge_open_requests", "Requests (websockets among them) open at the edge",
                                   labels=["instance", "organisation"])
        for row in self.rows:
            info.add_metric([row.name, row.organisation], 1)
            if row.up is not None:
                up.add_metric([row.name, row.organisation], row.up)
            for svc, (want, have) in sorted(row.replicas.items()):
                desired.add_metric([row.name, svc], want)
                running.add_metric([row.name, svc], have)
            opened.add_metric([row.name, row.organisation], row.open_requests)
        yield from (info, up, desired, running, opened)
        yield from self._certificates()
        try:
            yield from database_metrics()
        except Exception as exc:  # a scrape must not fail for a database hiccup: these series are missing then
            log.warning("metrics: %s", exc)
        finally:
            close_old_connections()

    def _certificates(self) -> Iterator[Metric]:
        if self.edge_dir is not None and time.monotonic() - self._certificates_at >= CERTIFICATES_EVERY:
            self._certificates_at = time.monotonic()
            self.certificates = certificate_expiry(self.edge_dir)
        family = GaugeMetricFamily("hafen_edge_certificate_expiry_timestamp_seconds",
                                   "When a certificate of the edge expires", labels=["domain"])
        for domain, ts in sorted(self.certificates.items()):
            family.add_metric([domain], ts)
        yield family


def certificate_expiry(edge_dir: Path) -> dict[str, float]:
    """The expiry of each certificate the edge keeps (Caddy's storage in the edge directory), by domain."""
    from cryptography import x509

    found: dict[str, float] = {}
    for path in edge_dir.rglob("*.crt"):
        if "certificates" not in path.parts:
            continue  # the local CA's own root and intermediate
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue
        found[path.stem] = cert.not_valid_after_utc.timestamp()
    return found


def _ts(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def database_metrics() -> Iterator[Metric]:
    """What the database knows: operations, backups and verifications, the kinds of error per instance."""
    ops = GaugeMetricFamily("hafen_operations", "Operations by kind and state", labels=["kind", "state"])
    for row in Operation.objects.values("kind", "state").annotate(n=Count("id")).order_by():
        ops.add_metric([row["kind"], row["state"]], row["n"])
    yield ops
    instances = {i.name: (i.organisation.slug if i.organisation is not None else "", i.created_at)
                 for i in Instance.objects.select_related("organisation").exclude(state=State.DELETED)}
    labels = ["instance", "organisation"]
    ok = dict(Snapshot.objects.filter(status=SnapshotStatus.OK).values("instance_name")
              .annotate(at=Max("finished_at")).values_list("instance_name", "at"))
    verified = dict(Snapshot.objects.filter(verification=Verification.VERIFIED).values("instance_name")
                    .annotate(at=Max("verified_at")).values_list("instance_name", "at"))
    last_backup: dict[str, str] = {}
    for name, status in Snapshot.objects.filter(status__in=(SnapshotStatus.OK, SnapshotStatus.FAILED)) \
            .order_by("finished_at", "id").values_list("instance_name", "status"):
        last_backup[name] = status
    last_check: dict[str, str] = {}
    for name, result in Snapshot.objects.filter(verification__in=(Verification.VERIFIED, Verification.FAILED)) \
            .order_by("verified_at", "id").values_list("instance_name", "verification"):
        last_check[name] = result
    success = GaugeMetricFamily("hafen_backup_last_success_timestamp_seconds",
                                "The last successful backup (the instance's creation if none)", labels=labels)
    failed = GaugeMetricFamily("hafen_backup_last_failed", "1 if the last backup failed", labels=labels)
    v_success = GaugeMetricFamily("hafen_verification_last_success_timestamp_seconds",
                                  "The last verified backup (the instance's creation if none)", labels=labels)
    v_failed = GaugeMetricFamily("hafen_verification_last_failed", "1 if the last verification failed",
                                 labels=labels)
    for name, (org, created) in sorted(instances.items()):
        success.add_metric([name, org], _ts(ok.get(name) or created))
        failed.add_metric([name, org], int(last_backup.get(name) == SnapshotStatus.FAILED))
        v_success.add_metric([name, org], _ts(verified.get(name) or created))
        v_failed.add_metric([name, org], int(last_check.get(name) == Verification.FAILED))
    yield from (success, failed, v_success, v_failed)
    kinds = GaugeMetricFamily("hafen_instance_error_kinds", "Kinds of error an instance's logs showed",
                              labels=labels)
    for name, org, count in error_kinds():
        kinds.add_metric([name, org], count)
    yield kinds


def error_kinds() -> list[tuple[str, str, int]]:
    """(instance, organisation, kinds of error) from the grouped errors of the instances' logs."""
    return [row for row in groups.kinds_per_instance() if row[0]]


EXPORTER = Exporter()


# -- the services and their files ---------------------------------------------------------------------


def recipients() -> files.Recipients:
    """The operators' addresses (staff users) and each organisation's admins', from the control plane."""
    users = get_user_model().objects.filter(is_active=True).exclude(email="")
    operators = sorted(u.email for u in users.filter(is_staff=True))
    admins: dict[str, list[str]] = {}
    for slug, email in Membership.objects.filter(role=Role.ADMIN, user__is_active=True).exclude(user__email="") \
            .values_list("organisation__slug", "user__email").order_by("organisation__slug", "user__email"):
        admins.setdefault(slug, []).append(email)
    webhooks = {o.slug: access.alert_webhook(o) for o in Organisation.objects.exclude(alert_webhook="")}
    return files.Recipients(operators, admins, webhooks)


def smtp_secret(prefix: str, password: str) -> str:
    return f"{prefix}-alerts-smtp-{hashlib.sha256(password.encode()).hexdigest()[:12]}"


def specs(settings: Settings, obs: Observation, secret: str | None) -> list[ServiceSpec]:
    prefix, local = settings.prefix, obs.local_node
    labels = {**naming.labels(prefix), LABEL_ROLE: ROLE_METRICS}
    config = Mount(str(settings.metrics_dir), files.MOUNT, kind="bind", read_only=True)
    host = [NetworkRef("host")]
    pinned = [f"node.id == {local}"] if local else []
    return [
        ServiceSpec(
            name=prometheus_service(prefix), image=PROMETHEUS_IMAGE, labels=labels, networks=host,
            constraints=pinned, memory_bytes=512 * 1024**2,
            mounts=[config, Mount(f"{prefix}-prometheus", "/var/lib/prometheus")],
            command=["prometheus", f"--config.file={files.MOUNT}/prometheus.yml",
                     "--storage.tsdb.path=/var/lib/prometheus",
                     f"--storage.tsdb.retention.time={settings.metrics_retention}",
                     f"--web.listen-address=127.0.0.1:{settings.prometheus_port}", "--web.enable-lifecycle"],
        ),
        ServiceSpec(
            name=alertmanager_service(prefix), image=ALERTMANAGER_IMAGE, labels=labels, networks=host,
            constraints=pinned, memory_bytes=128 * 1024**2,
            mounts=[config, Mount(f"{prefix}-alertmanager", "/var/lib/alertmanager")],
            secrets=[SecretRef(secret, "smtp-password")] if secret else [],
            command=["prometheus-alertmanager", f"--config.file={files.MOUNT}/alertmanager.yml",
                     "--storage.path=/var/lib/alertmanager", "--cluster.listen-address=",
                     f"--web.listen-address=127.0.0.1:{settings.alertmanager_port}"],
        ),
        ServiceSpec(
            name=node_service(prefix), image=NODE_IMAGE, labels=labels, networks=host, global_mode=True,
            memory_bytes=64 * 1024**2,
            env={"HAFEN_PREFIX": prefix, "PORT": str(settings.cgroup_exporter_port),
                 "NODE_EXPORTER_PORT": str(settings.node_exporter_port)},
            mounts=[Mount("/sys/fs/cgroup", "/host/cgroup", kind="bind", read_only=True),
                    Mount("/proc", "/host/proc", kind="bind", read_only=True),
                    Mount("/sys", "/host/sys", kind="bind", read_only=True),
                    Mount("/", "/host/root", kind="bind", read_only=True),
                    Mount(settings.node_docker_socket, "/var/run/docker.sock", kind="bind")],
        ),
    ]


def _write(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write if different; return whether it changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


class MetricsReconciler:
    """Each pass: the files, the services, a reload of what changed; the exporter started once."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.exporter = EXPORTER
        self.exporter.edge_dir = settings.edge_dir
        self._recipients: files.Recipients | None = None
        self._recipients_at = -RECIPIENTS_EVERY
        self._rules_mtime = 0.0
        self._reload: set[str] = set()  # services whose files changed and which have not reloaded yet

    def reconcile(self, obs: Observation) -> None:
        """Metrics are no reason to stop the loop: a problem here is logged and tried again next pass."""
        try:
            self._reconcile(obs)
        except (HafenError, OSError) as exc:
            log.warning("metrics: %s", exc)

    def _reconcile(self, obs: Observation) -> None:
        prefix = self.settings.prefix
        if not self.settings.metrics:
            for name in services(prefix):
                if name in obs.services:
                    self.engine.remove_service(name)
            return
        if self.settings.engine == "swarm":
            try:
                self.exporter.serve(self.settings.controller_metrics_port)
            except OSError as exc:
                log.warning("metrics: hafen's exporter cannot listen on 127.0.0.1:%d: %s",
                            self.settings.controller_metrics_port, exc)
        secret = self._files(obs)
        for volume in (f"{prefix}-prometheus", f"{prefix}-alertmanager"):  # labelled: a clean-up finds them
            if volume not in obs.volumes:
                self.engine.create_volume(volume, naming.labels(prefix))
        for spec in specs(self.settings, obs, secret):
            self.engine.apply_service(spec, obs.services.get(spec.name))
        self._reload_changed()

    def _files(self, obs: Observation) -> str | None:
        settings, directory = self.settings, self.settings.metrics_dir
        if time.monotonic() - self._recipients_at >= RECIPIENTS_EVERY:
            self._recipients, self._recipients_at = recipients(), time.monotonic()
        assert self._recipients is not None
        host = mail.parse(settings.smtp_url)
        secret = None
        if host is not None and host.password:
            secret = smtp_secret(settings.prefix, host.password)
            if secret not in obs.secrets:
                self.engine.create_secret(secret, host.password.encode(), naming.labels(settings.prefix))
        nodes = [files.Target(n.address.split(":")[0] if n.address.count(":") == 1 else n.address or
                              settings.advertise_addr, n.hostname) for n in obs.nodes.values() if n.ready] \
            or [files.Target(settings.advertise_addr, "local")]
        if _write(directory / "prometheus.yml", files.prometheus(settings)):
            self._reload.add(prometheus_service(settings.prefix))
        _write(directory / "targets" / "containers.json", files.targets(nodes, settings.cgroup_exporter_port))
        _write(directory / "targets" / "node.json", files.targets(nodes, settings.node_exporter_port))
        if _write(directory / "alertmanager.yml", files.alertmanager(settings, self._recipients, host), 0o600):
            self._reload.add(alertmanager_service(settings.prefix))
        rules = directory / files.RULES_FILE
        if not rules.exists():
            _write(rules, files.rules(settings))
        mtime = max((p.stat().st_mtime for p in rules.parent.glob("*.yml")), default=0.0)
        if mtime != self._rules_mtime:
            self._rules_mtime = mtime
            self._reload.add(prometheus_service(settings.prefix))
        for old in obs.secrets:  # a changed password's older secrets
            if old.startswith(f"{settings.prefix}-alerts-smtp-") and old != secret:
                self._unused_secret(old)
        return secret

    def _unused_secret(self, name: str) -> None:
        with contextlib.suppress(EngineError):  # still in use by the service's old task: a later pass
            self.engine.remove_secret(name)

    def _reload_changed(self) -> None:
        """POST /-/reload to the services whose files changed (a service that has not started yet reads
        them when it does)."""
        ports = {prometheus_service(self.settings.prefix): self.settings.prometheus_port,
                 alertmanager_service(self.settings.prefix): self.settings.alertmanager_port}
        for name in sorted(self._reload):
            try:
                httpx.post(f"http://127.0.0.1:{ports[name]}/-/reload", timeout=5).raise_for_status()
                self._reload.discard(name)
                log.info("metrics: %s reloaded its configuration", name)
            except httpx.HTTPStatusError as exc:  # a rule file that does not parse, say: the old one stays
                self._reload.discard(name)
                log.warning("metrics: %s refused its new configuration: %s", name, exc.response.text.strip()[:300])
            except httpx.HTTPError as exc:
                if self.settings.engine != "swarm":
                    self._reload.discard(name)
                else:
                    log.debug("metrics: reload of %s: %s", name, exc)

