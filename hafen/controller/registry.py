"""Reconcile the installation's image registry and keep hafen's images pushed into it.

The primary runs on the controller's node, where the images are built, and keeps them in a volume; every
other node runs a pull-through mirror of it. Both publish the same port on their node, so every engine
names the registry `127.0.0.1:PORT` (Docker trusts a registry on the loopback without TLS, and no node's
daemon needs configuring) and a service's image by digest there is the same reference on every node.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from hafen.config import Settings
from hafen.engine.base import LABEL_ROLE, Engine, Mount, Observation, PublishedPort, ServiceSpec
from hafen.errors import HafenError
from hafen.images import registry as images
from hafen.instances import naming

log = logging.getLogger("hafen.registry")

ROLE_REGISTRY = "registry"
STORAGE = "/var/lib/docker-registry"
# How often the controller looks for images the registry lacks (a few inspects of local images), and
# how long it rests after a failed push.
CHECK_EVERY = 30.0


def specs(settings: Settings, obs: Observation) -> list[ServiceSpec]:
    """The primary, pinned to the controller's node, and the mirrors, one on every other node."""
    prefix, port, local = settings.prefix, settings.registry_port, obs.local_node
    node = obs.nodes.get(local)
    address = node.address if node is not None and node.address else settings.advertise_addr
    if address.count(":") == 1:  # a manager's address comes with the swarm's port
        address = address.split(":")[0]
    labels = {**naming.labels(prefix), LABEL_ROLE: ROLE_REGISTRY}
    common: dict[str, Any] = {"image": images.REGISTRY_IMAGE, "labels": labels, "ports": [PublishedPort(5000, port)],
              "memory_bytes": 256 * 1024**2}
    return [
        ServiceSpec(name=naming.registry_service(prefix), constraints=[f"node.id == {local}"],
                    mounts=[Mount(naming.registry_volume(prefix), STORAGE)], **common),
        ServiceSpec(name=naming.registry_mirror_service(prefix), constraints=[f"node.id != {local}"],
                    env={"REGISTRY_PROXY_REMOTEURL": f"http://{address}:{port}"}, global_mode=True,
                    mounts=[Mount(naming.registry_volume(prefix), STORAGE,
                                  labels=tuple(sorted(naming.labels(prefix).items())))],
                    **common),
    ]


def ensure(engine: Engine, settings: Settings, obs: Observation) -> None:
    """The registry's volume and services, as they should be."""
    if naming.registry_volume(settings.prefix) not in obs.volumes:
        engine.create_volume(naming.registry_volume(settings.prefix), naming.labels(settings.prefix))
    for spec in specs(settings, obs):
        engine.apply_service(spec, obs.services.get(spec.name))


class RegistryReconciler:
    """Each pass: the registry's services; once the primary answers, a background push of what it lacks."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._pusher: threading.Thread | None = None
        self._checked_at = -CHECK_EVERY
        self._pushed = False  # set by the pusher's thread, read (and reset) by the controller's

    def reconcile(self, obs: Observation) -> bool:
        """Return whether images were pushed since the last call (services may name new digests)."""
        prefix = self.settings.prefix
        pushed, self._pushed = self._pushed, False
        if not self.settings.registry_port:
            for name in (naming.registry_service(prefix), naming.registry_mirror_service(prefix)):
                if name in obs.services:
                    self.engine.remove_service(name)
            return False
        ensure(self.engine, self.settings, obs)
        primary = obs.services.get(naming.registry_service(prefix))
        if primary is None or primary.running == 0:
            return pushed
        pushing = self._pusher is not None and self._pusher.is_alive()
        due = time.monotonic() - self._checked_at >= CHECK_EVERY
        if due and not pushing and self.settings.engine == "swarm":
            self._checked_at = time.monotonic()
            self._pusher = threading.Thread(target=self._push, name="hafen-registry-push", daemon=True)
            self._pusher.start()
        return pushed

    def _push(self) -> None:
        """Push what the registry lacks: after a build, or into a new registry (hafen up pushes too)."""
        def progress(tag: str, text: str) -> None:
            if text.startswith("pushed"):
                log.info("registry: %s %s", tag, text)

        try:
            if images.push_missing(self.settings.registry, progress):
                self._pushed = True
        except HafenError as exc:
            log.warning("registry: %s (tried again in %.0f s)", exc, CHECK_EVERY)
