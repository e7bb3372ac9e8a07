"""A real SMTP server for the slow tiers (aiosmtpd): the smarthost of the test installation's mail relay.

It listens on the host, on every address, at 28025 + HAFEN_TEST_PORT_OFFSET; the relay reaches it through its
way out (the swarm's docker_gwbridge, whose gateway is this host), which the test plane's HAFEN_SMTP_URL names.
"""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest

PORT = 28025 + int(os.environ.get("HAFEN_TEST_PORT_OFFSET", "0"))


def host_address() -> str:
    """This host's address on the bridge that gives swarm tasks their way out."""
    out = subprocess.run(["docker", "network", "inspect", "docker_gwbridge", "--format",
                          "{{range .IPAM.Config}}{{.Gateway}}{{end}}"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "172.18.0.1"


def smarthost_url() -> str:
    return f"smtp://{host_address()}:{PORT}?tls=none"


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    arrived: float

    @property
    def header_from(self) -> str:
        return str(self.message["From"] or "")


class Mailbox:
    """Every mail the server took, in order of arrival."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self._lock = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message,  # type: ignore[arg-type]
                                   time.monotonic()))
            self._lock.notify_all()
        return "250 OK"

    def wait_for(self, match: Callable[[Mail], bool], timeout: float = 60) -> Mail:
        """The first mail that matches, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for mail in self.mails:
                    if match(mail):
                        return mail
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(m.mail_from, m.rcpt_tos) for m in self.mails]
                    raise AssertionError(f"no matching mail in {timeout}s; got {got}")
                self._lock.wait(left)

    def to(self, address: str) -> list[Mail]:
        with self._lock:
            return [m for m in self.mails if address in m.rcpt_tos]


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(box, hostname="0.0.0.0", port=PORT, ready_timeout=10)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
