"""The mail relay as operators see it (`hafen mail status`, `hafen mail test`, the API and the UI)."""

from __future__ import annotations

import re
from typing import Any

from hafen.access import audit
from hafen.access.policy import Actor
from hafen.config import get_settings
from hafen.engine import get_engine
from hafen.errors import EngineNotFound, Forbidden, HafenError, InvalidInput
from hafen.instances import naming
from hafen.instances.models import Desired, Instance
from hafen.mail import relay
from hafen.mail.smarthost import parse

ADDRESS = re.compile(r"[^@\s<>\"',;]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
SMTP_SECRET = "smtp_password"


def _operator(actor: Actor) -> None:
    if not actor.is_operator:
        raise Forbidden("only operators see and test the mail relay")


def status(actor: Actor) -> dict[str, Any]:
    """The relay's state, the smarthost (never its password), the rate limit and the instances it serves."""
    _operator(actor)
    settings = get_settings()
    try:
        smarthost = parse(settings.smtp_url)
        problem = ""
    except HafenError as exc:  # shown, not raised: the operator should see why nothing leaves
        smarthost, problem = None, str(exc)
    domain = relay.mail_domain(settings.mail_from)
    service = naming.mail_service(settings.prefix)
    observed = get_engine().observe(settings.prefix).services.get(service)
    state = "absent" if observed is None else ("running" if observed.running else "starting")
    if observed is not None and observed.last_error and not observed.running:
        state = f"failing: {observed.last_error}"
    instances = (Instance.objects.filter(sandbox=False, secrets__name=SMTP_SECRET)
                 .exclude(desired_state=Desired.ERASED).order_by("name").distinct())
    return {
        "service": service,
        "state": state,
        "smarthost": smarthost.display if smarthost else "",
        "problem": problem,
        "mode": f"relaying to {smarthost.display}" if smarthost else f"refusing mail: {relay.NO_SMARTHOST}",
        "tls": smarthost.tls if smarthost else "",
        "mail_from": settings.mail_from,
        "mail_domain": domain,
        "rate": str(relay.parse_rate(settings.mail_rate)),
        "rate_words": relay.parse_rate(settings.mail_rate).words,
        "instances": [{"name": i.name, "sender": relay.sender(i.name, domain),
                       "network": naming.mail_network(settings.prefix, i.name)} for i in instances],
    }


def send_test(actor: Actor, address: str) -> dict[str, Any]:
    """Hand a test mail to the relay (from HAFEN_MAIL_FROM to `address`); it goes on to the smarthost."""
    with audit.audited(actor, "mail-test", to=address.strip()[:254]):
        return _send_test(actor, address.strip())


def _send_test(actor: Actor, address: str) -> dict[str, Any]:
    _operator(actor)
    if not ADDRESS.fullmatch(address):
        raise InvalidInput(f"not an e-mail address: {address!r}")
    settings = get_settings()
    service = naming.mail_service(settings.prefix)
    message = (f"From: hafen <{settings.mail_from}>\nTo: <{address}>\nSubject: hafen test mail\n\n"
               f"This mail went through the relay {service} of this hafen installation.\n")
    command = ["sh", "-c", 'printf "%s" "$HAFEN_MESSAGE" | sendmail -i -f "$HAFEN_FROM" -- "$HAFEN_TO"']
    try:
        code, output = get_engine().exec_in_service(
            service, command, {"HAFEN_MESSAGE": message, "HAFEN_FROM": settings.mail_from, "HAFEN_TO": address})
    except EngineNotFound as exc:
        raise HafenError(f"the mail relay does not run on this node ({service}): is the control plane up?") from exc
    if code != 0:
        raise HafenError(f"the relay did not take the mail: {output.strip() or f'exit code {code}'}")
    return {"queued": True, "to": address, "sender": settings.mail_from, "relay": service}
