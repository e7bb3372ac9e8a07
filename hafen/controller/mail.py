"""Reconcile the installation's mail relay (its configuration: hafen/mail/relay.py).

The relay is one swarm service (`PREFIX-mail`, image hafen/mail:1) on the controller's node, its queue in a
volume there. It joins `PREFIX-mail-out`, a network with a way off the host, and the mail network of every
instance whose web service sends mail (`PREFIX-INSTANCE_mail`, internal: only that web service and the
relay are on it, so instances do not meet there), where it answers as `mail`. Its configuration, with the
instances' password hashes and the smarthost's credentials, is one Docker secret named by its digest: an
instance made or erased, or another HAFEN_SMTP_URL, is a new secret and a rolling restart of the relay
(a few seconds in which the apps' mails are refused with a temporary error; what is queued stays).
"""

from __future__ import annotations

import contextlib
import logging

from hafen import crypto
from hafen.catalog import get_app
from hafen.config import Settings
from hafen.engine.base import LABEL_ROLE, Engine, Mount, NetworkRef, Observation, SecretRef, ServiceSpec
from hafen.errors import EngineConflict, EngineError, HafenError
from hafen.instances import naming
from hafen.instances.models import Desired, Instance, InstanceSecret, SecretStatus
from hafen.mail import relay
from hafen.mail.smarthost import Smarthost, parse

log = logging.getLogger("hafen.mail")

ROLE_MAIL = "mail"
MAIL_IMAGE = "hafen/mail:1"
SECRET = "smtp_password"  # an app that lists it in its secrets sends mail through the relay
QUEUE = "/var/spool/postfix"
MEMORY = 128 * 1024**2


def sends_mail(app: str) -> bool:
    try:
        return SECRET in get_app(app).secrets
    except HafenError:
        return False


def _labels(prefix: str) -> dict[str, str]:
    return {**naming.labels(prefix), LABEL_ROLE: ROLE_MAIL}


def ensure_network(engine: Engine, settings: Settings, obs: Observation, instance: str) -> None:
    """An instance's mail network (labelled as the installation's, not the instance's: the relay removes it
    once it has left it, after the instance is gone)."""
    network = naming.mail_network(settings.prefix, instance)
    if network not in obs.networks:
        with contextlib.suppress(EngineConflict):
            engine.create_network(network, _labels(settings.prefix), internal=True)
        obs.networks.add(network)


def spec(settings: Settings, obs: Observation, instances: list[str], config_secret: str) -> ServiceSpec:
    prefix = settings.prefix
    networks = [NetworkRef(naming.mail_out_network(prefix))]
    networks += [NetworkRef(naming.mail_network(prefix, name), aliases=(relay.ALIAS,)) for name in sorted(instances)]
    return ServiceSpec(
        name=naming.mail_service(prefix),
        image=MAIL_IMAGE,
        labels=_labels(prefix),
        secrets=[SecretRef(config_secret, "mail.tar")],
        mounts=[Mount(naming.mail_volume(prefix), QUEUE)],
        networks=networks,
        constraints=[f"node.id == {obs.local_node}"] if obs.local_node else ["node.role == manager"],
        memory_bytes=MEMORY,
        exclusive=True,  # two postfix masters cannot share the queue: a new task would wait for the lock forever
    )


class MailReconciler:
    """Each pass: every mail-sending instance has its credentials, its network and its place in the relay."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        # bad settings stop `hafen up` with one line (InvalidInput) rather than a relay that never works
        self.smarthost: Smarthost | None = parse(settings.smtp_url)
        self.domain = relay.mail_domain(settings.mail_from)
        self.rate = relay.parse_rate(settings.mail_rate)
        self._passwords: dict[tuple[int, int], str] = {}  # (secret row, version): decrypted once
        self.problem = ""

    def accounts(self) -> list[relay.Account]:
        """The mail accounts of the instances that send mail, creating the credentials of one made before
        hafen had a relay."""
        apps = [name for name in _apps() if sends_mail(name)]
        self._backfill(apps)
        rows = (InstanceSecret.objects.filter(instance__app__in=apps, instance__sandbox=False, name=SECRET,
                                               status=SecretStatus.ACTIVE)
                .exclude(instance__desired_state=Desired.ERASED)
                .values_list("pk", "version", "ciphertext", "instance__name", "instance_id"))
        newest: dict[str, tuple[int, int, str, int]] = {}
        for pk, version, ciphertext, name, number in rows:
            if name not in newest or version > newest[name][1]:
                newest[name] = (pk, version, ciphertext, number)
        accounts = []
        for name, (pk, version, ciphertext, number) in sorted(newest.items()):
            password = self._passwords.get((pk, version))
            if password is None:
                password = self._passwords[(pk, version)] = crypto.decrypt(ciphertext)
            accounts.append(relay.Account(name, number, password))
        return accounts

    def _backfill(self, apps: list[str]) -> None:
        missing = Instance.objects.filter(app__in=apps).exclude(desired_state=Desired.ERASED) \
            .exclude(secrets__name=SECRET)
        for instance in missing:
            InstanceSecret.objects.create(instance=instance, name=SECRET,
                                          ciphertext=crypto.encrypt(crypto.generate_password(32)))
            log.info("mail: SMTP credentials made for %s", instance.name)

    def reconcile(self, obs: Observation) -> None:
        prefix = self.settings.prefix
        try:
            accounts = self.accounts()
            self._docker_secrets(obs, accounts)
            if naming.mail_out_network(prefix) not in obs.networks:
                self.engine.create_network(naming.mail_out_network(prefix), _labels(prefix), internal=False)
                obs.networks.add(naming.mail_out_network(prefix))
            if naming.mail_volume(prefix) not in obs.volumes:
                self.engine.create_volume(naming.mail_volume(prefix), naming.labels(prefix))
            for account in accounts:
                ensure_network(self.engine, self.settings, obs, account.instance)
            data = relay.archive(relay.files(self.smarthost, accounts, self.domain, self.rate,
                                             hostname=f"{naming.mail_service(prefix)}.{self.domain}"))
            secret = naming.mail_config_secret(prefix, relay.digest(data))
            if secret not in obs.secrets:
                with contextlib.suppress(EngineConflict):
                    self.engine.create_secret(secret, data, _labels(prefix))
            wanted = spec(self.settings, obs, [a.instance for a in accounts], secret)
            if self.engine.apply_service(wanted, obs.services.get(wanted.name)):
                log.info("mail: relay configured for %d instances (%s)", len(accounts),
                         self.smarthost.display if self.smarthost else "no smarthost")
            self._prune(obs, secret, {a.instance for a in accounts})
            self.problem = ""
        except EngineError as exc:
            if str(exc) != self.problem:
                log.warning("mail: %s", exc)
            self.problem = str(exc)

    def _docker_secrets(self, obs: Observation, accounts: list[relay.Account]) -> None:
        """The credentials as the web services get them (an instance made before the relay had none)."""
        prefix = self.settings.prefix
        versions = dict(InstanceSecret.objects.filter(instance__name__in=[a.instance for a in accounts], name=SECRET,
                                                      status=SecretStatus.ACTIVE)
                        .values_list("instance__name", "version"))
        for account in accounts:
            name = naming.secret(prefix, account.instance, SECRET, versions.get(account.instance, 1))
            if name not in obs.secrets:
                with contextlib.suppress(EngineConflict):
                    self.engine.create_secret(name, account.password.encode(), naming.labels(prefix, account.instance))
                obs.secrets.add(name)

    def _prune(self, obs: Observation, current: str, instances: set[str]) -> None:
        """Older configurations and the mail networks of instances gone, once the relay has let go of them
        (until then the engine refuses, and a later pass tries again)."""
        prefix = self.settings.prefix
        for name in sorted(obs.secrets):
            if name.startswith(naming.mail_config_secret(prefix, "")) and name != current:
                with contextlib.suppress(EngineError):
                    self.engine.remove_secret(name)
        keep = {naming.mail_network(prefix, i) for i in instances}
        for network in sorted(n for n in obs.networks if naming.is_mail_network(prefix, n) and n not in keep):
            with contextlib.suppress(EngineError):
                self.engine.remove_network(network)


def _apps() -> list[str]:
    from hafen.catalog import apps

    return list(apps())
