"""The mail relay on a real swarm: postfix relays a demo instance's mail to a real SMTP server (aiosmtpd,
tests/mailbox.py) with the instance's sender, refuses relaying without a login, holds the rate limit, and is
the only SMTP server a web service reaches."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import PREFIX, Plane
from tests.mailbox import PORT, Mailbox, host_address

pytestmark = pytest.mark.integration

DOMAIN = "mail.test"  # HAFEN_MAIL_FROM's domain in the test plane (tests/conftest.py)

# Run in the web service's container: send one mail per subject in one SMTP session, as an app would, with
# the login and address the stack gives it; print what each send answered.
SEND = r"""
import json, os, smtplib, sys
from email.message import EmailMessage
to, login, subjects = sys.argv[1], sys.argv[2] == "login", sys.argv[3:]
results = []
try:
    with smtplib.SMTP(os.environ["EMAIL_HOST"], int(os.environ["EMAIL_PORT"]), timeout=20) as smtp:
        if login:
            smtp.login(os.environ["EMAIL_HOST_USER"], open("/run/secrets/smtp_password").read().strip())
        for subject in subjects:
            msg = EmailMessage()
            msg["From"] = "Demo Sender <someone@elsewhere.example>"
            msg["To"] = to
            msg["Subject"] = subject
            msg.set_content("hello from the demo app")
            try:
                smtp.send_message(msg)
                results.append("sent")
            except smtplib.SMTPRecipientsRefused as exc:
                results.append("refused " + " ".join(f"{c} {m.decode()}" for c, m in exc.recipients.values()))
            except smtplib.SMTPResponseException as exc:
                results.append(f"refused {exc.smtp_code} {exc.smtp_error.decode()}")
                smtp.rset()
except Exception as exc:
    results.append(f"error {type(exc).__name__}: {exc}")
print(json.dumps(results))
"""

# Speak SMTP to a host and port: the banner, or why there was none.
BANNER = r"""
import smtplib, sys
try:
    with smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=8) as smtp:
        print("banner", smtp.noop()[0])
except Exception as exc:
    print("error", type(exc).__name__, exc)
"""


def _web(plane: Plane, name: str) -> Any:
    containers = plane.containers(f"{PREFIX}-{name}_web")
    assert containers, f"no web container of {name}"
    return containers[0]


def send(plane: Plane, name: str, *subjects: str, to: str = "someone@example.test", login: bool = True) -> list[str]:
    code, output = _web(plane, name).exec_run(["python3", "-c", SEND, to, "login" if login else "-", *subjects])
    assert code == 0, output.decode()
    result: list[str] = json.loads(output.decode().strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def sender(plane: Plane, mailbox: Mailbox) -> Iterator[str]:
    """A demo instance whose web service the relay serves (its first mail through goes round once)."""
    name = f"tmail-{os.getpid() % 1000}"
    plane.create(name, "demo")
    # the relay joins the instance's mail network on the controller's next pass, restarting
    plane.wait_until(lambda: any(i["name"] == name for i in plane.json("mail", "status")["instances"])
                     and plane.json("mail", "status")["state"] == "running", timeout=120)
    plane.wait_until(lambda: send(plane, name, f"warm-up {uuid.uuid4()}") == ["sent"], timeout=120, interval=2)
    yield name
    plane.hafen("erase", name, "--yes", check=False)


def test_a_mail_of_an_instance_arrives_with_the_instances_sender(plane: Plane, mailbox: Mailbox, sender: str) -> None:
    subject = f"rewrite {uuid.uuid4()}"
    assert send(plane, sender, subject, to="alice@example.test") == ["sent"]
    mail = mailbox.wait_for(lambda m: m.message["Subject"] == subject, timeout=60)
    assert mail.mail_from == f"{sender}@{DOMAIN}"
    assert mail.rcpt_tos == ["alice@example.test"]
    # the address is the instance's, the display name the app's
    assert mail.header_from == f"Demo Sender <{sender}@{DOMAIN}>"
    status = plane.json("mail", "status")
    assert status["smarthost"].startswith("smtp://") and status["rate"] == "10/m"
    assert {"name": sender, "sender": f"{sender}@{DOMAIN}", "network": f"{PREFIX}-{sender}_mail"} in \
        status["instances"]


def test_the_relay_refuses_to_relay_without_a_login_or_with_a_wrong_one(plane: Plane, sender: str) -> None:
    results = send(plane, sender, f"anonymous {uuid.uuid4()}", login=False)
    assert len(results) == 1 and results[0].startswith("refused 554") and "Relay access denied" in results[0]
    wrong = SEND.replace('open("/run/secrets/smtp_password").read().strip()', '"not-the-password"')
    code, output = _web(plane, sender).exec_run(["python3", "-c", wrong, "x@example.test", "login", "s"])
    assert "SMTPAuthenticationError" in output.decode() and "535" in output.decode()


def test_a_web_service_reaches_no_smtp_server_but_the_relay(plane: Plane, mailbox: Mailbox, sender: str) -> None:
    host = host_address()
    # the relay reaches the test's SMTP server (its way out) ...
    relay = plane.containers(f"{PREFIX}-mail")[0]
    code, output = relay.exec_run(["bash", "-c", f"exec 3<>/dev/tcp/{host}/{PORT} && head -c 3 <&3"])
    assert output.decode() == "220", output
    # ... the web service does not (its networks are internal), but it speaks SMTP with the relay
    code, output = _web(plane, sender).exec_run(["python3", "-c", BANNER, host, str(PORT)])
    assert output.decode().startswith("error"), output.decode()
    code, output = _web(plane, sender).exec_run(["python3", "-c", BANNER, "mail", "25"])
    assert output.decode().strip() == "banner 250", output.decode()


def test_the_rate_limit_holds(plane: Plane, mailbox: Mailbox, sender: str) -> None:
    tag = uuid.uuid4()
    results = send(plane, sender, *[f"rate {tag} {i}" for i in range(12)])
    sent = [r for r in results if r == "sent"]
    refused = [r for r in results if r != "sent"]
    # 10 a minute: whatever earlier tests sent this minute counts too, so at most 10 pass and some are refused
    assert 1 <= len(sent) <= 10 and results[:len(sent)] == sent, results
    assert refused and all(r.startswith("refused 450") and "10 mails per minute" in r for r in refused), results
    mailbox.wait_for(lambda m: m.message["Subject"] == f"rate {tag} {len(sent) - 1}", timeout=60)
    assert not [m for m in mailbox.mails if str(m.message["Subject"]).startswith(f"rate {tag} {len(sent)}")]


def test_an_operator_sends_a_test_mail_through_the_relay(plane: Plane, mailbox: Mailbox, sender: str) -> None:
    address = f"ops-{uuid.uuid4().hex[:8]}@example.test"
    out = plane.hafen("mail", "test", address).stdout
    assert "queued" in out
    mail = mailbox.wait_for(lambda m: address in m.rcpt_tos, timeout=60)
    assert mail.mail_from == f"hafen@{DOMAIN}"
    bad = plane.hafen("mail", "test", "not an address", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: not an e-mail address")
