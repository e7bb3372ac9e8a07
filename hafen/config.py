"""Settings of a hafen installation, read from HAFEN_* environment variables."""

import contextlib
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # How often a job retries a repository that does not answer (with backoff) before it fails.
    backup_retries: int = Field(default=4, ge=0, le=20)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "hafen.sqlite3"

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
