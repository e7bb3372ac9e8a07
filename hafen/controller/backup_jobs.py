"""The jobs that back up, restore and check an instance, and maintain the repository.

Each is a one-off swarm job from the image hafen/backup:1 (see hafen/images/backup/hafen-backup), so it
runs wherever the instance's tasks can: it joins the instance's internal network to reach its
database, mounts its volumes, and reaches the repository over the backup network (or a bind mount of
a repository on this host). It reports through its log: `HAFEN-PROGRESS {...}` now and then, and at
the end `HAFEN-RESULT {...}` or `HAFEN-ERROR one line`. A job goes on when the controller dies; the
controller reads its state and result from the swarm on the next pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hafen import crypto
from hafen.catalog import App
from hafen.config import Settings, read_or_create_key
from hafen.engine.base import Engine, Mount, NetworkRef, Observation, SecretRef, ServiceSpec, ServiceState
from hafen.errors import EngineConflict, EngineError, HafenError
from hafen.instances import naming

BACKUP_IMAGE = "hafen/backup:1"
REPO_MOUNT = "/repo"
RESULT = "HAFEN-RESULT "
ERROR = "HAFEN-ERROR "
PROGRESS = "HAFEN-PROGRESS "
JOB_MEMORY = 1024**3
LABEL_RUN = "hafen.run"


class JobFailed(HafenError):
    """A job ended with an error: its own one line, or what the swarm said."""


def repository_url(settings: Settings) -> str:
    return REPO_MOUNT if settings.local_repository is not None else settings.backup_repository


def password(settings: Settings) -> bytes:
    """The repository's password: from HAFEN_BACKUP_PASSWORD_FILE, or generated on first use."""
    return read_or_create_key(settings.repository_password_path, lambda: crypto.generate_password(40).encode())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


@dataclass
class Repository:
    """What every job needs to reach the repository, made once per pass where missing."""

    settings: Settings
    secrets: list[SecretRef] = field(default_factory=list)
    image: str = BACKUP_IMAGE

    def ensure(self, engine: Engine, obs: Observation) -> None:
        prefix = self.settings.prefix
        self.image = engine.image_ref(BACKUP_IMAGE)
        labels = naming.labels(prefix)
        if naming.backup_network(prefix) not in obs.networks:
            engine.create_network(naming.backup_network(prefix), labels, internal=False)
        if naming.backup_cache_volume(prefix) not in obs.volumes:
            engine.create_volume(naming.backup_cache_volume(prefix), labels)
        local = self.settings.local_repository
        if local is not None:
            local.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = [("restic_password", password(self.settings))]
        if self.settings.backup_env_file is not None:
            try:
                files.append(("restic_env", self.settings.backup_env_file.read_bytes()))
            except OSError as exc:
                raise HafenError(f"cannot read HAFEN_BACKUP_ENV_FILE: {exc}") from exc
        self.secrets = []
        for target, data in files:
            name = f"{prefix}-backup-{target.replace('_', '-')}-{_digest(data)}"
            if name not in obs.secrets:
                with contextlib.suppress(EngineConflict):  # made by a pass that died before it was observed
                    engine.create_secret(name, data, labels)
            self.secrets.append(SecretRef(name, target))

    def spec(self, name: str, labels: dict[str, str], command: list[str], env: dict[str, str],
             secrets: list[SecretRef] | None = None, mounts: list[Mount] | None = None,
             networks: list[NetworkRef] | None = None, constraints: list[str] | None = None) -> ServiceSpec:
        """A job of the backup image; `constraints` keep one that mounts an instance's volumes on its node."""
        prefix = self.settings.prefix
        local = self.settings.local_repository
        all_mounts = [Mount(naming.backup_cache_volume(prefix), "/cache"), *(mounts or [])]
        constraints = list(constraints or [])
        if local is not None:
            all_mounts.append(Mount(str(local), REPO_MOUNT, kind="bind"))
            constraints.append("node.role == manager")  # the repository is a directory of this host
        return ServiceSpec(
            name=name,
            image=self.image,
            labels=labels,
            command=command,
            env={"RESTIC_REPOSITORY": repository_url(self.settings),
                 "RESTIC_PASSWORD_FILE": "/run/secrets/restic_password",
                 "RESTIC_CACHE_DIR": "/cache", "HAFEN_RETRIES": str(self.settings.backup_retries), **env},
            secrets=[*self.secrets, *(secrets or [])],
            mounts=all_mounts,
            networks=[NetworkRef(naming.backup_network(prefix)), *(networks or [])],
            constraints=constraints,
            job=True,
            memory_bytes=JOB_MEMORY,
        )


def backup_spec(app: App) -> dict[str, Any]:
    """What the job reads and counts in the instance's database (HAFEN_BACKUP_SPEC)."""
    backup = app.backup
    return {
        "database": {"host": backup.database_service, "name": backup.database, "user": backup.user},
        "tables": backup.tables,
        "schema_query": backup.schema_query,
        "volumes": app.backup_volumes,
    }


@dataclass(frozen=True)
class JobOutcome:
    done: bool
    result: dict[str, Any] | None = None
    progress: str = ""


def read_lines(engine: Engine, service: str, tail: int | None = None) -> list[str]:
    try:
        return [line.strip() for line in engine.service_logs(service, tail=tail)]
    except EngineError:
        return []


def progress(lines: list[str]) -> str:
    for line in reversed(lines):
        if line.startswith(PROGRESS):
            try:
                data = json.loads(line[len(PROGRESS):])
            except ValueError:
                continue
            percent = data.get("percent")
            text = str(data.get("message") or data.get("step") or "")
            return f"{text} ({percent:.0f} %)" if isinstance(percent, int | float) else text
    return ""


def outcome(engine: Engine, state: ServiceState | None, spec: ServiceSpec | None, tail_progress: bool = True
            ) -> JobOutcome:
    """Where a job is: not started or running (with its latest progress), or done with its result.
    With a spec, a job of another spec counts as not started. Raise JobFailed with the job's own
    error line if it failed.
    """
    if state is None or (spec is not None and state.spec_digest != spec.digest()):
        return JobOutcome(False)
    name = state.name
    if state.complete:
        lines = read_lines(engine, name)
        results = [json.loads(line[len(RESULT):]) for line in lines if line.startswith(RESULT)]
        if not results:
            raise JobFailed(f"{name} finished without a result")
        merged: dict[str, Any] = {}
        for result in results:
            merged.update(result)
        return JobOutcome(True, merged)
    if state.failures:
        lines = read_lines(engine, name, tail=40)
        errors = [line[len(ERROR):] for line in lines if line.startswith(ERROR)]
        reason = errors[-1] if errors else (state.last_error or "exited with an error")
        raise JobFailed(reason)
    return JobOutcome(False, progress=progress(read_lines(engine, name, tail=20)) if tail_progress else "")
