"""The files Prometheus and Alertmanager read, generated from the settings and the control plane's users.

Pure functions of their inputs (the unit tier checks them): the controller writes their results into
`<data dir>/metrics/`, which both services mount read-only, and asks them to reload when a file changed.
The rules are the exception: written once from the defaults, then the operator's to edit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from hafen.config import Settings
from hafen.mail.smarthost import Smarthost

MOUNT = "/etc/hafen-metrics"  # where the services see the data directory's metrics/
SMTP_PASSWORD = "/run/secrets/smtp-password"  # the Docker secret Alertmanager reads the password from
RULES_FILE = "rules/hafen.yml"


@dataclass(frozen=True)
class Target:
    """One node's exporters, for Prometheus's file_sd."""

    address: str
    node: str


@dataclass
class Recipients:
    """Who hears about what: the operators about everything, an organisation's admins about its instances."""

    operators: list[str] = field(default_factory=list)
    organisations: dict[str, list[str]] = field(default_factory=dict)  # slug: admins' addresses
    webhooks: dict[str, str] = field(default_factory=dict)  # slug: the organisation's own webhook


def prometheus(settings: Settings) -> str:
    local = "127.0.0.1"
    config: dict[str, Any] = {
        "global": {"scrape_interval": settings.scrape_interval, "evaluation_interval": settings.evaluation_interval,
                   "external_labels": {"hafen": settings.prefix}},
        "rule_files": [f"{MOUNT}/rules/*.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{local}:{settings.alertmanager_port}"]}]}]},
        "scrape_configs": [
            # hafen's own metrics: the controller's exporter, on the loopback only
            {"job_name": "hafen", "honor_labels": True,
             "static_configs": [{"targets": [f"{local}:{settings.controller_metrics_port}"]}]},
            # the containers' cgroups and the nodes, on every node (the controller writes the targets)
            {"job_name": "containers", "honor_labels": True,
             "file_sd_configs": [{"files": [f"{MOUNT}/targets/containers.json"], "refresh_interval": "30s"}]},
            {"job_name": "node", "file_sd_configs": [{"files": [f"{MOUNT}/targets/node.json"],
                                                      "refresh_interval": "30s"}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"{local}:{settings.prometheus_port}"]}]},
            {"job_name": "alertmanager", "static_configs": [{"targets": [f"{local}:{settings.alertmanager_port}"]}]},
        ],
    }
    return "# written by hafen's controller: changes are overwritten\n" + yaml.safe_dump(config, sort_keys=False)


def targets(nodes: list[Target], port: int) -> str:
    """A file_sd file: each node's address at the port, labelled with the node's name."""
    groups = [{"targets": [f"{t.address}:{port}"], "labels": {"node": t.node}} for t in sorted(
        nodes, key=lambda t: t.node)]
    return json.dumps(groups, indent=1) + "\n"


def _tls(host: Smarthost) -> dict[str, Any]:
    """Alertmanager's SMTP TLS from the smarthost's level.

    Alertmanager 0.25 speaks TLS from the first byte on port 465 and STARTTLS only when `require_tls`;
    so `may` cannot be "STARTTLS if offered" there: it sends in the clear, as `none` does.
    """
    verify = host.tls == "verify"
    if host.implicit_tls:
        return {"require_tls": False, "tls_config": {"insecure_skip_verify": not verify}}
    if host.tls in ("verify", "encrypt"):
        return {"require_tls": True, "tls_config": {"insecure_skip_verify": not verify}}
    return {"require_tls": False}


def alertmanager(settings: Settings, recipients: Recipients, smarthost: Smarthost | None) -> str:
    """Routes: every alert to the operators, and those with an organisation label to its admins too."""
    receivers: list[dict[str, Any]] = []

    def receiver(name: str, addresses: list[str], webhook: str) -> None:
        entry: dict[str, Any] = {"name": name}
        if addresses and smarthost is not None:
            mail: dict[str, Any] = {"to": ", ".join(sorted(set(addresses))), "send_resolved": True,
                                    "smarthost": f"{smarthost.host}:{smarthost.port}",
                                    "from": settings.mail_from, "hello": settings.mail_from.rpartition("@")[2]
                                    or "localhost", **_tls(smarthost)}
            if smarthost.username:
                mail["auth_username"] = smarthost.username
                mail["auth_password_file"] = SMTP_PASSWORD
            entry["email_configs"] = [mail]
        if webhook:
            entry["webhook_configs"] = [{"url": webhook, "send_resolved": True}]
        receivers.append(entry)

    receiver("operators", recipients.operators, settings.alert_webhook_url)
    routes: list[dict[str, Any]] = [{"receiver": "operators", "continue": True}]
    for slug in sorted(set(recipients.organisations) | set(recipients.webhooks)):
        addresses = recipients.organisations.get(slug, []) if smarthost is not None else []
        webhook = recipients.webhooks.get(slug, "")
        if not addresses and not webhook:
            continue
        receiver(f"org-{slug}", addresses, webhook)
        routes.append({"receiver": f"org-{slug}", "matchers": [f'organisation="{slug}"'], "continue": True})
    config = {
        "route": {"receiver": "operators", "group_by": ["alertname", "instance"],
                  "group_wait": settings.alert_group_wait, "group_interval": settings.alert_group_interval,
                  "repeat_interval": settings.alert_repeat_interval, "routes": routes},
        "receivers": receivers,
    }
    return "# written by hafen's controller: changes are overwritten\n" + yaml.safe_dump(config, sort_keys=False)


# -- the rules -------------------------------------------------------------------------------------

# Adds the instance's organisation to a series keyed by instance (the alert then reaches its admins).
ORG = "* on(instance) group_left(organisation) hafen_instance_info"

# name, expression, `for`, severity, summary. The `for` is the shipped default; HAFEN_ALERT_FOR shortens
# them all (the tests do).
DEFAULT_RULES: list[tuple[str, str, str, str, str]] = [
    ("InstanceDown", "hafen_instance_up == 0", "2m", "critical",
     "{{ $labels.instance }} is down: its web service has no healthy replica"),
    ("RestartLoop", f"(increase(hafen_container_failures_total[15m]) >= 3) {ORG}", "0s", "warning",
     "{{ $labels.instance }}/{{ $labels.service }} restarted {{ $value | printf \"%.0f\" }} times in 15 minutes"),
    ("MemoryNearLimit", "(max by (instance, service) (hafen_container_memory_bytes / "
     f"hafen_container_memory_limit_bytes) > 0.9) {ORG}", "10m", "warning",
     "{{ $labels.instance }}/{{ $labels.service }} uses {{ $value | humanizePercentage }} of its memory limit"),
    ("ErrorRate", "(sum by (instance, organisation) (rate(hafen_edge_requests_total{code=~\"5..\"}[5m])) / "
     "sum by (instance, organisation) (rate(hafen_edge_requests_total[5m])) > 0.05) and "
     "sum by (instance, organisation) (rate(hafen_edge_requests_total[5m])) > 0.1", "5m", "warning",
     "{{ $labels.instance }} answers {{ $value | humanizePercentage }} of its requests with an error"),
    ("BackupFailed", "hafen_backup_last_failed == 1", "0s", "critical",
     "the last backup of {{ $labels.instance }} failed"),
    ("BackupMissing", "time() - hafen_backup_last_success_timestamp_seconds > 48 * 3600", "0s", "critical",
     "{{ $labels.instance }} has no successful backup for {{ $value | humanizeDuration }}"),
    ("VerificationFailed", "hafen_verification_last_failed == 1", "0s", "critical",
     "the last verification of a backup of {{ $labels.instance }} failed"),
    ("VerificationMissing", "time() - hafen_verification_last_success_timestamp_seconds > 48 * 3600", "0s",
     "warning", "no backup of {{ $labels.instance }} was verified for {{ $value | humanizeDuration }}"),
    ("DiskNearlyFull", "node_filesystem_avail_bytes{fstype!~\"tmpfs|overlay|squashfs\"} / "
     "node_filesystem_size_bytes{fstype!~\"tmpfs|overlay|squashfs\"} < 0.1", "10m", "critical",
     "{{ $labels.mountpoint }} on {{ $labels.node }} has {{ $value | humanizePercentage }} left"),
    ("CertificateExpiry", "hafen_edge_certificate_expiry_timestamp_seconds - time() < 14 * 86400", "1h", "warning",
     "the certificate of {{ $labels.domain }} expires in {{ $value | humanizeDuration }}"),
    ("ControllerNotPassing", "up{job=\"hafen\"} == 0 or time() - hafen_controller_last_pass_timestamp_seconds > 120",
     "2m", "critical", "hafen's controller has not passed for a while: nothing is reconciled"),
    # an instance's first kind of error has no series 15 min back: it counts from 0
    ("NewErrorKind", "(hafen_instance_error_kinds > (hafen_instance_error_kinds offset 15m"
     f" or hafen_instance_error_kinds * 0)) {ORG}", "0s", "warning",
     "{{ $labels.instance }} logs a new kind of error"),
]


def rules(settings: Settings) -> str:
    """The default rules as a Prometheus rule file (written once; the operator may edit it)."""
    group = {"name": "hafen", "rules": [
        {"alert": name, "expr": expr, "for": settings.alert_for or wait,
         "labels": {"severity": severity}, "annotations": {"summary": summary}}
        for name, expr, wait, severity, summary in DEFAULT_RULES
    ]}
    head = ("# hafen's alert rules: written once from the defaults, then yours to edit (Prometheus reloads\n"
            "# when the controller sees the file change). Delete it to get the defaults back. Every other\n"
            "# *.yml beside it is read too. Labels `instance` and `organisation` route the mails.\n")
    return head + yaml.safe_dump({"groups": [group]}, sort_keys=False, width=200)
