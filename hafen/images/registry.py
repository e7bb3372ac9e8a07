"""Pushes of hafen's images into the installation's registry (see hafen/controller/registry.py).

The registry is published on every node's loopback port, so each engine names it `127.0.0.1:PORT` and
pulls from it without TLS; a pushed image gets a digest there that services name (Engine.image_ref).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import docker
import httpx

from hafen.engine.swarm import engine_errors, pushed_ref
from hafen.errors import EngineNotFound, HafenError
from hafen.images.build import plan

REGISTRY_IMAGE = "hafen/registry:2"

Progress = Callable[[str, str], None]  # (image tag, what happens now)


def answers(registry: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"http://{registry}/v2/", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def pushable() -> list[str]:
    """The images hafen deploys as services: every built image but the bases and the registry's own (each
    node has that one before it can pull anything: `hafen node join-command` loads it)."""
    return [job.tag for job in plan() if job.context is not None and job.tag != REGISTRY_IMAGE]


def unpushed(client: docker.DockerClient, registry: str, tags: list[str]) -> list[str]:
    """Those of `tags` that this engine has and whose current image is not in the registry yet."""
    result = []
    for tag in tags:
        try:
            with engine_errors(f"inspect image {tag}"):
                image = client.api.inspect_image(tag)
        except EngineNotFound:
            continue
        if not pushed_ref(image.get("RepoDigests") or [], registry, tag):
            result.append(tag)
    return result


def push(client: docker.DockerClient, registry: str, tag: str, progress: Progress) -> str:
    """Push one local image into the registry; return its reference there by digest."""
    target = f"{registry}/{tag}"
    repo, _, version = target.rpartition(":")
    started = time.monotonic()
    layers: dict[str, str] = {}
    with engine_errors(f"push {tag} to the registry {registry}"):
        client.api.tag(tag, repo, version)
        for event in client.api.push(repo, version, stream=True, decode=True):
            if "error" in event:
                raise HafenError(f"pushing {tag} to the registry {registry} failed: {event['error']}")
            if event.get("id") and event.get("status"):
                layers[event["id"]] = event["status"]
                done = sum(1 for s in layers.values() if s in ("Pushed", "Layer already exists", "Mounted from"))
                progress(tag, f"pushing: {done}/{len(layers)} layers")
        image = client.api.inspect_image(tag)
    ref = pushed_ref(image.get("RepoDigests") or [], registry, tag)
    if not ref:
        raise HafenError(f"pushing {tag} to the registry {registry} left no digest")
    progress(tag, f"pushed in {time.monotonic() - started:.0f} s")
    return ref


def push_missing(registry: str, progress: Progress, client: docker.DockerClient | None = None) -> list[str]:
    """Push every image hafen deploys that this engine has and the registry lacks; return the references
    pushed. Raise HafenError if the registry does not answer while there is something to push."""
    own = client is None
    with engine_errors("connect"):
        client = client or docker.from_env(timeout=600)  # a push may stay silent for minutes
    try:
        todo = unpushed(client, registry, pushable())
        if todo and not answers(registry):
            raise HafenError(f"the image registry {registry} does not answer (is the control plane running?)")
        return [push(client, registry, tag, progress) for tag in todo]
    finally:
        if own:
            client.close()
