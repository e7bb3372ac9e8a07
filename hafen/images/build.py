"""Build every image hafen needs, in dependency order, cached by content.

Base images come from a registry when one answers, else from debootstrap. Each
built image carries a label with the digest of its build context, so that a
changed Dockerfile is rebuilt and an unchanged one is skipped.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from hafen.catalog import apps
from hafen.engine.swarm import SDK_ERRORS, engine_errors
from hafen.errors import EngineNotFound, HafenError

PACKAGE_DIR = Path(__file__).resolve().parent.parent
LABEL_CONTEXT = "hafen.context"
BASE_SUITES = {"bullseye": "hafen/base:bullseye", "bookworm": "hafen/base:bookworm"}
DEBIAN_MIRROR = os.environ.get("HAFEN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Copied into every build context, for the images' HEALTHCHECK (see the script).
PROBE = PACKAGE_DIR / "images/probe/hafen-probe"


@dataclass(frozen=True)
class ImageJob:
    tag: str
    context: Path | None = None  # None: a base image
    suite: str = ""
    args: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        sha = hashlib.sha256(repr(sorted(self.args.items())).encode())
        if self.context is None:
            sha.update(self.suite.encode())
        else:
            for path in [*sorted(p for p in self.context.rglob("*") if p.is_file() and not _cache(p)), PROBE]:
                sha.update(str(path.relative_to(self.context) if path != PROBE else path.name).encode())
                sha.update(path.read_bytes())
        return sha.hexdigest()[:16]


def _cache(path: Path) -> bool:
    """Python's byte code, which the tests may leave beside a context's scripts: not part of the image."""
    return "__pycache__" in path.parts


def plan() -> list[ImageJob]:
    jobs = [ImageJob(tag, suite=suite) for suite, tag in BASE_SUITES.items()]
    jobs += [
        ImageJob("hafen/postgres:15", PACKAGE_DIR / "images/postgres"),
        ImageJob("hafen/redis:7", PACKAGE_DIR / "images/redis"),
        ImageJob("hafen/backup:1", PACKAGE_DIR / "images/backup"),
        ImageJob("hafen/backup-target:1", PACKAGE_DIR / "images/backup-target"),
        ImageJob("hafen/edge:caddy", PACKAGE_DIR / "edge/image"),
        ImageJob("hafen/registry:2", PACKAGE_DIR / "images/registry"),
        ImageJob("hafen/collector:1", PACKAGE_DIR / "images/collector"),
        ImageJob("hafen/edge-agent:1", PACKAGE_DIR / "edge/agent"),
        ImageJob("hafen/prometheus:1", PACKAGE_DIR / "images/prometheus"),
        ImageJob("hafen/alertmanager:1", PACKAGE_DIR / "images/alertmanager"),
        ImageJob("hafen/node-metrics:1", PACKAGE_DIR / "images/node-metrics"),
        ImageJob("hafen/mail:1", PACKAGE_DIR / "images/mail"),
    ]
    for app in apps().values():
        for version in app.versions:
            for image in app.images:
                jobs.append(
                    ImageJob(
                        image.tag.format(version=version),
                        app.directory / image.context,
                        args=image.build_args(version),
                    )
                )
    return jobs


Progress = Callable[[str, str], None]  # (image tag, what happens now)


class Builder:
    def __init__(self, ca_bundle: Path | None = None, index_url: str | None = None,
                 client: docker.DockerClient | None = None) -> None:
        if ca_bundle is not None and not ca_bundle.is_file():
            raise HafenError(f"CA bundle {ca_bundle} is not a file")
        self.ca_bundle = ca_bundle
        self.index_url = index_url
        with engine_errors("connect"):  # builds are slow: a step may stay silent for minutes
            self.client = client or docker.from_env(timeout=600)
            self.client.ping()

    @classmethod
    def from_env(cls) -> Builder:
        """A builder that trusts $SSL_CERT_FILE and uses $PIP_INDEX_URL, as pip on the host does."""
        ca = os.environ.get("SSL_CERT_FILE")
        return cls(Path(ca) if ca and Path(ca).is_file() else None, os.environ.get("PIP_INDEX_URL") or None)

    def current(self, job: ImageJob) -> bool:
        try:
            with engine_errors(f"inspect image {job.tag}"):
                image = self.client.images.get(job.tag)
        except EngineNotFound:
            return False
        return bool(image.labels.get(LABEL_CONTEXT) == job.digest() or (job.context is None))

    def build(self, job: ImageJob, progress: Progress) -> None:
        if job.context is None:
            self._base(job, progress)
        else:
            self._docker_build(job, progress)

    def _base(self, job: ImageJob, progress: Progress) -> None:
        progress(job.tag, "pulling debian:" + job.suite + "-slim")
        try:
            image = self.client.images.pull("debian", tag=f"{job.suite}-slim")
            image.tag(job.tag)
            return
        except SDK_ERRORS:
            pass
        if shutil.which("debootstrap") is None:
            raise HafenError("no registry answers and debootstrap is not installed (apt-get install debootstrap)")
        with tempfile.TemporaryDirectory(prefix="hafen-base-") as tmp:
            root = Path(tmp) / "root"
            progress(job.tag, f"debootstrap {job.suite} (no registry answers)")
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", job.suite, str(root), DEBIAN_MIRROR],
                capture_output=True, text=True, check=False,
            )
            if result.returncode != 0:
                tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
                raise HafenError(f"debootstrap {job.suite} failed: {' / '.join(tail)}")
            progress(job.tag, "importing")
            archive = Path(tmp) / "root.tar"
            subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
            repo, tag = job.tag.split(":")
            with engine_errors(f"import {job.tag}"):
                self.client.api.import_image_from_file(str(archive), repository=repo, tag=tag)

    def _docker_build(self, job: ImageJob, progress: Progress) -> None:
        assert job.context is not None
        with tempfile.TemporaryDirectory(prefix="hafen-build-") as tmp:
            context = Path(tmp) / "context"
            shutil.copytree(job.context, context, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(PROBE, context / PROBE.name)
            ca = context / "ca.pem"
            if self.ca_bundle is not None:
                shutil.copyfile(self.ca_bundle, ca)
            else:
                ca.write_text("")
            args = dict(job.args)
            if self.index_url:
                args["PIP_INDEX_URL"] = self.index_url
            progress(job.tag, "starting")
            with engine_errors(f"build {job.tag}"):
                self._stream(job, context, args, progress)

    def _stream(self, job: ImageJob, context: Path, args: dict[str, str], progress: Progress) -> None:
        stream = self.client.api.build(
            path=str(context), tag=job.tag, buildargs=args, rm=True, forcerm=True, decode=True,
            labels={LABEL_CONTEXT: job.digest()},
        )
        log: list[str] = []
        for event in stream:
            if "error" in event:
                tail = " / ".join(line.strip() for line in log[-5:] if line.strip())
                raise HafenError(f"building {job.tag} failed: {event['error'].strip()} ({tail})")
            text = str(event.get("stream", "")).strip()
            if text:
                log.append(text)
                step = re.match(r"Step (\d+/\d+) : (.*)", text)
                if step:
                    progress(job.tag, f"step {step.group(1)}: {step.group(2)[:60]}")


def build_all(builder: Builder, progress: Progress, only_stale: bool = False) -> list[str]:
    """Build the images that need it; return the tags built."""
    built = []
    for job in plan():
        if only_stale and builder.current(job):
            continue
        builder.build(job, progress)
        progress(job.tag, "done")
        built.append(job.tag)
    return built
