"""Names and labels of the swarm objects of an installation and its instances."""

from hafen.engine.base import LABEL_INSTANCE, LABEL_PREFIX, LABEL_SERVICE, LABEL_STACK, Mount


def stack(prefix: str, instance: str) -> str:
    return f"{prefix}-{instance}"


def service(prefix: str, instance: str, svc: str) -> str:
    return f"{stack(prefix, instance)}_{svc}"


def internal_network(prefix: str, instance: str) -> str:
    return f"{stack(prefix, instance)}_internal"


def instance_edge_network(prefix: str, instance: str) -> str:
    """The network on which the edge proxy, and nothing else, reaches this instance's web service."""
    return f"{stack(prefix, instance)}_edge"


def is_instance_edge_network(prefix: str, network: str) -> bool:
    return network.startswith(f"{prefix}-") and network.endswith("_edge")


def route_suffix(prefix: str) -> str:
    """The DNS label under which the proxy looks up a domain: `{domain}.{suffix}`.

    Not the name of any network the proxy is on (Docker's DNS also answers
    `name.NETWORK`): hafen's networks are `{prefix}-edge`, `{prefix}-edge-public`
    and `{prefix}-{instance}_{kind}`; no instance name makes this one.
    """
    return f"{prefix}-route"


def edge_alias(prefix: str, domain: str) -> str:
    """The web service's alias on its instance's edge network."""
    return f"{domain}.{route_suffix(prefix)}"


def volume(prefix: str, instance: str, vol: str) -> str:
    return f"{stack(prefix, instance)}_{vol}"


def secret(prefix: str, instance: str, name: str, version: int) -> str:
    return f"{stack(prefix, instance)}_{name}_v{version}"


def edge_network(prefix: str) -> str:
    return f"{prefix}-edge"


def edge_service(prefix: str) -> str:
    return f"{prefix}-edge"


def edge_status_service(prefix: str) -> str:
    return f"{prefix}-edge-status"


def edge_agent_service(prefix: str) -> str:
    """The edge agents, which keep a proxy on each node labelled for the edge other than the controller's."""
    return f"{prefix}-edge-agent"


def edge_agent_volume(prefix: str) -> str:
    """The proxy's configuration on a node of an edge agent (the controller's node has a directory)."""
    return f"{prefix}-edge-conf"


def edge_volume(prefix: str) -> str:
    return f"{prefix}-edge-data"


def backup_network(prefix: str) -> str:
    """The network backup jobs reach a repository off the host on (the instances' own are internal)."""
    return f"{prefix}-backup"


def backup_cache_volume(prefix: str) -> str:
    return f"{prefix}-backup-cache"


def backup_service(prefix: str, instance: str, job: str) -> str:
    """A backup, restore or check job of an instance."""
    return service(prefix, instance, job)


def maintenance_service(prefix: str) -> str:
    return f"{prefix}-backup-maintenance"


def labels(prefix: str, instance: str | None = None, svc: str | None = None) -> dict[str, str]:
    result = {LABEL_PREFIX: prefix}
    if instance is not None:
        result[LABEL_INSTANCE] = instance
        result[LABEL_STACK] = stack(prefix, instance)
    if svc is not None:
        result[LABEL_SERVICE] = svc
    return result


def pinned_to(node: str) -> list[str]:
    """The placement constraint that keeps a service on the node that holds its instance's volumes."""
    return [f"node.id == {node}"] if node else []


def volume_mount(prefix: str, instance: str, vol: str, target: str, node: str, read_only: bool = False) -> Mount:
    """A mount of an instance's volume; on a placed instance it carries the labels the volume is created with
    wherever it is first used (the controller creates volumes only on its own node)."""
    created_with = tuple(sorted(labels(prefix, instance).items())) if node else ()
    return Mount(volume(prefix, instance, vol), target, read_only=read_only, labels=created_with)


def registry_service(prefix: str) -> str:
    return f"{prefix}-registry"


def registry_mirror_service(prefix: str) -> str:
    return f"{prefix}-registry-mirror"


def registry_volume(prefix: str) -> str:
    return f"{prefix}-registry"


def mail_service(prefix: str) -> str:
    """The installation's mail relay (hafen/controller/mail.py)."""
    return f"{prefix}-mail"


def mail_network(prefix: str, instance: str) -> str:
    """The internal network on which an instance's web service reaches the relay, and nothing else."""
    return f"{stack(prefix, instance)}_mail"


def is_mail_network(prefix: str, network: str) -> bool:
    return network.startswith(f"{prefix}-") and network.endswith("_mail")


def mail_out_network(prefix: str) -> str:
    """The relay's way off the host (the instances' networks are internal)."""
    return f"{prefix}-mail-out"


def mail_volume(prefix: str) -> str:
    """The relay's queue."""
    return f"{prefix}-mail-queue"


def mail_config_secret(prefix: str, digest: str) -> str:
    return f"{prefix}-mail-conf-{digest}"
