"""Settings of a hafen installation, read from HAFEN_* environment variables."""

import contextlib
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hafen.errors import InvalidInput

# The control plane's own database: SQLite in the data directory (the default), or PostgreSQL.
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
SQLITE_OPTIONS = {
    "timeout": 20,
    # Every transaction takes the write lock when it begins, so the controller and the web never meet in a
    # lock upgrade; on PostgreSQL, rows are locked where it matters (select_for_update).
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAFEN_")

    data_dir: Path = Field(default=Path.home() / ".local/share/hafen")
    # Names every swarm object and labels it, so that two installations (a
    # developer's and a test run's) can share one swarm without touching each other.
    prefix: str = Field(default="hafen", pattern=r"^[a-z][a-z0-9]{1,15}$")
    engine: Literal["swarm", "fake"] = "swarm"
    http_port: int = 80
    https_port: int = 443
    domain_suffix: str = "localhost"
    acme_email: str = ""
    web_host: str = "127.0.0.1"
    web_port: int = 8765
    # The public address of the web UI when it sits behind a TLS proxy, e.g.
    # https://hafen.example.com: trusted for CSRF, and cookies become secure.
    web_origin: str = ""
    login_rate: str = "10/m"
    advertise_addr: str = "127.0.0.1"
    # The control plane's own database: empty for SQLite in the data directory, or
    # postgresql://USER:PASSWORD@HOST:PORT/NAME (also sqlite:////abs/path). Never printed with its password.
    database_url: str = ""
    # A restic repository URL (a path, sftp:, rest:, s3: ...); empty: a repository in the data directory,
    # which is on this host and so no protection against losing the host.
    backup_repository: str = ""
    # The repository's password, in a file; empty: generated on first use in the data directory.
    backup_password_file: Path | None = None
    # Extra environment for restic (KEY=VALUE lines: credentials of s3:, rest: ...), in a file.
    backup_env_file: Path | None = None
    backup_concurrency: int = Field(default=1, ge=1, le=16)
    # instances a drain moves at once (each is a backup and a restore: CPU and disk bound)
    move_concurrency: int = Field(default=1, ge=1, le=16)
    # The installation's defaults of the elastic-capacity policy (durations like 30m, 24h, or never): an
    # instance without a request for `idle` sleeps, after `deep_sleep` its database and cache stop too.
    idle: str = "30m"
    deep_sleep: str = "24h"
    # how long the edge holds a request to a sleeping instance until it answers (off, 5s, 10s, 20s, 30s, 60s)
    wake_hold: str = "off"
    # how long before an event its instance is woken and given the event's replicas
    event_lead: str = "30m"
    # autoscaling's defaults (an instance's policy sets its range, min and max, to turn it on): the
    # in-flight requests and the CPU (% of its limit) a web replica should have
    target_inflight: int = Field(default=10, ge=1, le=10_000)
    target_cpu: int = Field(default=70, ge=5, le=100)
    # The installation's image registry: its port on every node of the swarm (the controller's node holds
    # the images, the others a pull-through mirror); services name images by digest there. 0: no registry,
    # services name images by tag (enough for a swarm of one node; each node then needs every image).
    registry_port: int = Field(default=5000, ge=0, le=65535)
    # The Docker socket on every node, as the edge agents there mount it (a swarm template may name the node).
    node_docker_socket: str = "/var/run/docker.sock"
    # How often a job retries a repository that does not answer (with backoff) before it fails.
    backup_retries: int = Field(default=4, ge=0, le=20)
    # The smarthost every mail leaves through (the apps' relay and the alerts), see hafen/mail/smarthost.py:
    # smtp://USER:PASSWORD@HOST:587?tls=verify. Empty: no mail leaves the installation.
    smtp_url: str = ""
    # The address hafen's own mails (alerts) come from, and the domain of the instances' senders.
    mail_from: str = "hafen@localhost"
    # Central logs: the port (UDP from the logging drivers, TCP between the nodes' collectors) the log
    # collector publishes on every node (0: no collector, the daemon's default logging), and how long
    # lines and error groups are kept.
    log_port: int = Field(default=5514, ge=0, le=65535)
    log_retention: str = "14d"
    # Metrics and alerts (see README "Metrics and alerts"): Prometheus, Alertmanager and the exporters.
    metrics: bool = True
    # The first of five ports (Prometheus, Alertmanager, the controller's exporter, each node's
    # node-exporter and cgroup exporter); 0: the web port + 10. Prometheus, Alertmanager and hafen's own
    # exporter listen on the loopback of the controller's node only.
    metrics_port: int = Field(default=0, ge=0, le=65530)
    metrics_retention: str = "15d"
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    # Every rule's `for:` when set (the tests shorten them); empty: each rule's own.
    alert_for: str = ""
    alert_group_wait: str = "30s"
    alert_group_interval: str = "5m"
    alert_repeat_interval: str = "4h"
    # Alerts are posted here too (Alertmanager's webhook format), with their resolution.
    alert_webhook_url: str = ""
    # How many mails each instance may send through the relay (N/s, N/m, N/h or N/d); beyond, 450 4.7.1.
    mail_rate: str = "100/h"

    @property
    def prometheus_port(self) -> int:
        return self.metrics_port or self.web_port + 10

    @property
    def alertmanager_port(self) -> int:
        return self.prometheus_port + 1

    @property
    def controller_metrics_port(self) -> int:
        return self.prometheus_port + 2

    @property
    def node_exporter_port(self) -> int:
        return self.prometheus_port + 3

    @property
    def cgroup_exporter_port(self) -> int:
        return self.prometheus_port + 4

    @property
    def metrics_dir(self) -> Path:
        return self.data_dir / "metrics"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "hafen.sqlite3"

    @property
    def database_scheme(self) -> str:
        """sqlite or postgresql; raise InvalidInput, naming the variable but not the URL, for anything else."""
        if not self.database_url:
            return "sqlite"
        scheme = urlsplit(self.database_url).scheme.lower()
        if scheme not in DATABASE_SCHEMES:
            shown = f"{scheme}://" if scheme else "a URL without a scheme"
            raise InvalidInput(f"HAFEN_DATABASE_URL must start with postgresql:// or sqlite:// (got {shown})")
        return "postgresql" if scheme == "postgres" else scheme

    @property
    def database_display(self) -> str:
        """The control plane's database as users see it: never the password of its URL."""
        if self.database_scheme == "sqlite":
            # sqlite:////abs/path names /abs/path (dj-database-url's reading)
            return f"SQLite {self.database_url.partition('://')[2][1:] or self.db_path}"
        url = urlsplit(self.database_url)
        user = f"{url.username}@" if url.username else ""
        port = f":{url.port}" if url.port else ""
        return f"PostgreSQL {url.scheme}://{user}{url.hostname or ''}{port}{url.path}"

    def django_database(self) -> dict[str, Any]:
        """Django's DATABASES["default"]: SQLite in the data directory unless database_url says otherwise."""
        if not self.database_url:
            return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(self.db_path), "OPTIONS": SQLITE_OPTIONS}
        scheme = self.database_scheme
        import dj_database_url

        try:
            config: dict[str, Any] = dict(dj_database_url.parse(self.database_url))
        except ValueError as exc:  # never repeat the URL: it may hold a password
            raise InvalidInput(f"HAFEN_DATABASE_URL is not a valid {scheme} URL") from exc
        if scheme == "sqlite":
            config["OPTIONS"] = SQLITE_OPTIONS
        else:
            # The web's threads and the controller each keep a connection for a minute, checked before
            # reuse; a control plane whose database went away reconnects on its next pass.
            config.update(CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True)
            config.setdefault("OPTIONS", {}).setdefault("connect_timeout", 10)
        return config

    @property
    def registry(self) -> str:
        """The registry as every node's engine names it (it is published on each node), or empty."""
        return f"127.0.0.1:{self.registry_port}" if self.registry_port else ""

    @property
    def key_path(self) -> Path:
        return self.data_dir / "secret.key"

    @property
    def edge_dir(self) -> Path:
        return self.data_dir / "edge"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "controller.log"

    @property
    def wake_path(self) -> Path:
        return self.data_dir / "controller.wake"

    @property
    def local_repository(self) -> Path | None:
        """The host directory of a repository given as a path (the default one included), else None."""
        url = self.backup_repository
        if not url:
            return self.data_dir / "backups" / "repository"
        if url.startswith("/"):
            return Path(url)
        return None

    @property
    def repository_display(self) -> str:
        """Where backups go, as users see it (no password of a URL); the local default says it is not off-host."""
        local = self.local_repository
        if local is not None:
            return f"{local} (on this host: no protection if the host is lost)"
        scheme, sep, rest = self.backup_repository.partition("://")
        if sep and "@" in rest.split("/", 1)[0]:
            creds, _, host = rest.partition("@")
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
        return self.backup_repository

    @property
    def repository_password_path(self) -> Path:
        return self.backup_password_file or self.data_dir / "backup-password"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "controller.pid"


def read_or_create_key(path: Path, generate: Callable[[], bytes]) -> bytes:
    """A key kept in a file readable by its owner alone, made on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError), os.fdopen(
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"
        ) as handle:
            handle.write(generate())
    return path.read_bytes().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
