"""Render an instance's stack template into the engine's service specs."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from hafen.catalog import App, ServiceTemplate, StackTemplate
from hafen.engine.base import NetworkRef, SecretRef, ServiceSpec
from hafen.errors import InvalidInput
from hafen.instances import naming

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def memory_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)B?", text.strip().upper())
    if not match:
        raise InvalidInput(f"not a memory size: {text!r} (use e.g. 512M or 1G)")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class StackInput:
    prefix: str
    name: str
    domain: str
    app: App
    version: str
    size: str
    replicas: int
    secret_versions: dict[str, int]
    running: bool = True
    restart: int = 0
    job_run: str = ""
    # False for a verification's sandbox: its web service joins no edge network
    edge: bool = True
    # the node that holds the instance's volumes: services that mount one are pinned there
    node: str = ""
    # the image id each tag is pinned to (Instance.images); a tag not pinned names its current build
    images: dict[str, str] = field(default_factory=dict)
    # what a service names for a tag and its pinned id: its digest in the installation's registry, or the
    # id (Engine.image_ref)
    image_ref: Callable[[str, str], str] | None = None
    # how far asleep it is (Instance.sleep): "light" scales the web service to zero, "deep" every service
    sleep: str = ""
    # the domain of the instance's mail sender (hafen/mail/relay.py), for the templates' `mail_domain`
    mail_domain: str = "localhost"


def _replicas(data: StackInput, svc: str, tpl: ServiceTemplate) -> int:
    if tpl.job:  # a job's spec does not follow the running state, so a queued stop leaves a running job be
        return tpl.replicas
    web = svc == data.app.web_service
    if not data.running or data.sleep == "deep" or (web and data.sleep == "light"):
        return 0
    return data.replicas if web else tpl.replicas


def _spec(data: StackInput, svc: str, tpl: ServiceTemplate) -> ServiceSpec:
    networks = []
    for net in tpl.networks:
        if net == "internal":
            networks.append(NetworkRef(naming.internal_network(data.prefix, data.name), aliases=(svc,)))
        elif net == "mail":
            # the relay's network of this instance (not in a verification's sandbox, which sends nothing)
            if data.edge:
                networks.append(NetworkRef(naming.mail_network(data.prefix, data.name)))
        elif data.edge:
            # The edge proxy finds a web service by the request's host (its alias on the instance's
            # own edge network, which only the proxy joins besides it).
            networks.append(NetworkRef(naming.instance_edge_network(data.prefix, data.name),
                                       aliases=(naming.edge_alias(data.prefix, data.domain),)))
    unknown = [s for s in tpl.secrets if s not in data.secret_versions]
    if unknown:
        raise InvalidInput(f"stack template of {data.app.name} names unknown secrets: {', '.join(unknown)}")
    labels = naming.labels(data.prefix, data.name, svc)
    if tpl.job:
        labels["hafen.run"] = data.job_run
    return ServiceSpec(
        name=naming.service(data.prefix, data.name, svc),
        image=data.image_ref(tpl.image, data.images.get(tpl.image, "")) if data.image_ref else tpl.image,
        labels=labels,
        command=tpl.command,
        env=dict(tpl.environment),
        secrets=[
            SecretRef(naming.secret(data.prefix, data.name, s, data.secret_versions[s]), s) for s in tpl.secrets
        ],
        mounts=[naming.volume_mount(data.prefix, data.name, v, target, data.node) for v, target in tpl.volumes.items()],
        networks=networks,
        # everything of a placed instance runs on its node (a cache left elsewhere would move, and blink,
        # when that node is drained); only a web service that mounts no volume may spread
        constraints=naming.pinned_to(data.node) if tpl.volumes or svc != data.app.web_service else [],
        replicas=_replicas(data, svc, tpl),
        job=tpl.job,
        memory_bytes=memory_bytes(tpl.memory) if tpl.memory else None,
        nano_cpus=int(tpl.cpus * 1e9) if tpl.cpus else None,
        force_update=data.restart if svc == data.app.web_service else 0,
    )


def _template(data: StackInput) -> StackTemplate:
    size = data.app.sizes.get(data.size)
    if size is None:
        raise InvalidInput(f"unknown size {data.size!r}; sizes: {', '.join(data.app.sizes)}")
    return data.app.render(name=data.name, version=data.version, size=size, replicas=data.replicas, app=data.app,
                           mail_domain=data.mail_domain)


def image_tags(data: StackInput) -> set[str]:
    """The image tags the instance's stack names."""
    return {tpl.image for tpl in _template(data).services.values()}


def image_tags_of(app: App, version: str, size: str) -> set[str]:
    """The image tags a stack of `app` at `version` names (they depend on the version, not the instance)."""
    return image_tags(StackInput(prefix="", name="tags", domain="", app=app, version=version, size=size,
                                 replicas=1, secret_versions={}))


def render(data: StackInput) -> tuple[dict[str, ServiceSpec], list[list[str]]]:
    """The instance's service specs by logical name, and the order to start them in."""
    template = _template(data)
    if data.app.web_service not in template.services:
        raise InvalidInput(f"stack template of {data.app.name} has no web service {data.app.web_service!r}")
    specs = {svc: _spec(data, svc, tpl) for svc, tpl in template.services.items()}
    return specs, template.waves()
