"""Reconcile the installation's log collector and run the ingest of its spool.

The primary collector runs on the controller's node and writes into the data directory's spool; a
forwarder runs on every other node (global) and relays to the primary over TCP. Both publish the log
port on their node (host mode): UDP for the logging drivers of that node's containers, TCP for the
forwarders. Their own logging is the daemon's default (json-file), not themselves.
"""

from __future__ import annotations

import logging
import threading

from hafen.config import Settings
from hafen.engine.base import LABEL_ROLE, Engine, LogDriver, Mount, Observation, PublishedPort, ServiceSpec
from hafen.errors import EngineError, EngineUnavailable
from hafen.instances import naming
from hafen.instances.policy import parse_duration
from hafen.logs.ingest import Ingester, spool_dir
from hafen.logs.shipping import CollectorHandler
from hafen.logs.store import get_store

log = logging.getLogger("hafen.logs")

ROLE_COLLECTOR = "collector"
COLLECTOR_IMAGE = "hafen/collector:1"
OWN_LOGGING = LogDriver("json-file", (("max-size", "10m"), ("max-file", "2")))


def primary_name(prefix: str) -> str:
    return f"{prefix}-logs"


def forwarder_name(prefix: str) -> str:
    return f"{prefix}-logs-forward"


def specs(settings: Settings, obs: Observation, image: str = COLLECTOR_IMAGE) -> list[ServiceSpec]:
    prefix, port, local = settings.prefix, settings.log_port, obs.local_node
    node = obs.nodes.get(local)
    address = node.address if node is not None and node.address else settings.advertise_addr
    address = address.split(":")[0] if address.count(":") == 1 else address
    labels = {**naming.labels(prefix), LABEL_ROLE: ROLE_COLLECTOR}
    ports = [PublishedPort(514, port, "udp"), PublishedPort(514, port, "tcp")]
    return [
        ServiceSpec(name=primary_name(prefix), image=image, labels=labels, ports=ports,
                    constraints=[f"node.id == {local}"], memory_bytes=96 * 1024**2, log_driver=OWN_LOGGING,
                    mounts=[Mount(str(spool_dir(settings.data_dir)), "/spool", kind="bind")]),
        ServiceSpec(name=forwarder_name(prefix), image=image, labels=labels, ports=ports, global_mode=True,
                    constraints=[f"node.id != {local}"], memory_bytes=96 * 1024**2, log_driver=OWN_LOGGING,
                    env={"HAFEN_FORWARD_TO": f"{address}:{port}"}),
    ]


class LogKeeper:
    """Each pass: the collector's services. Once: the ingest thread and the controller's own lines."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.stop = threading.Event()
        self.ingester: Ingester | None = None
        self.handler: CollectorHandler | None = None

    def start(self) -> None:
        if not self.settings.log_port:
            return
        retention = parse_duration(self.settings.log_retention, "HAFEN_LOG_RETENTION") or 14 * 86400
        self.ingester = Ingester(spool_dir(self.settings.data_dir), get_store(), self.settings.prefix, retention)
        threading.Thread(target=self.ingester.run, args=(self.stop,), daemon=True, name="logs-ingest").start()
        self.handler = CollectorHandler(self.settings.prefix, self.settings.log_port)
        self.handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(self.handler)  # the root: see CollectorHandler

    def shutdown(self) -> None:
        self.stop.set()
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler.close()

    def reconcile(self, obs: Observation) -> None:
        prefix = self.settings.prefix
        if not self.settings.log_port:
            for name in (primary_name(prefix), forwarder_name(prefix)):
                if name in obs.services:
                    self.engine.remove_service(name)
            return
        image = self.engine.image_ref(COLLECTOR_IMAGE, self.engine.image_id(COLLECTOR_IMAGE))
        for spec in specs(self.settings, obs, image):
            try:
                self.engine.apply_service(spec, obs.services.get(spec.name))
            except EngineUnavailable:
                raise
            except EngineError as exc:  # the instances' work goes on; the next pass tries again
                log.warning("logs: %s: %s", spec.name, exc)
