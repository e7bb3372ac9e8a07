"""The smarthost in HAFEN_SMTP_URL, read once for every part of hafen that sends mail.

    smtp://[USER:PASSWORD@]HOST[:PORT][?tls=encrypt|verify|may|none]   port 25 or 587, STARTTLS
    smtps://[USER:PASSWORD@]HOST[:PORT][?tls=verify|encrypt]           port 465, TLS from the first byte

`tls` says how hard TLS is required: `verify` (encrypted, certificate checked: the default for a
smarthost with a user), `encrypt` (encrypted, any certificate), `may` (STARTTLS when offered, the default
without a user), `none` (plain, a smarthost on a trusted network only; not with smtps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from hafen.errors import InvalidInput

TlsLevel = Literal["verify", "encrypt", "may", "none"]
TLS_LEVELS: tuple[TlsLevel, ...] = ("verify", "encrypt", "may", "none")


@dataclass(frozen=True)
class Smarthost:
    host: str
    port: int
    username: str = ""
    password: str = ""
    implicit_tls: bool = False  # smtps: TLS from the first byte; else STARTTLS as `tls` says
    tls: TlsLevel = "may"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def display(self) -> str:
        """As users see it: never the password."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.address}?tls={self.tls}"


def parse(url: str) -> Smarthost | None:
    """The smarthost of a URL; None for an empty one (no mail leaves the installation). Raise InvalidInput
    naming the variable, never the URL (it may hold a password)."""
    if not url.strip():
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidInput("HAFEN_SMTP_URL is not a valid URL (smtp://[USER:PASSWORD@]HOST[:PORT])") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        shown = f"{scheme}://" if scheme else "a URL without a scheme"
        raise InvalidInput(f"HAFEN_SMTP_URL must start with smtp:// or smtps:// (got {shown})")
    if not parts.hostname:
        raise InvalidInput("HAFEN_SMTP_URL names no host")
    implicit = scheme == "smtps"
    username, password = unquote(parts.username or ""), unquote(parts.password or "")
    query = parse_qs(parts.query)
    level = (query.get("tls") or ["verify" if username or implicit else "may"])[-1].lower()
    if level not in TLS_LEVELS:
        raise InvalidInput(f"HAFEN_SMTP_URL: tls must be one of {', '.join(TLS_LEVELS)} (got {level!r})")
    if implicit and level in ("may", "none"):
        raise InvalidInput("HAFEN_SMTP_URL: smtps:// always encrypts; use tls=verify or tls=encrypt")
    if username and level == "none":
        raise InvalidInput("HAFEN_SMTP_URL: a password is never sent without TLS (tls=none with a user)")
    return Smarthost(host=parts.hostname, port=port or (465 if implicit else 25), username=username,
                     password=password, implicit_tls=implicit, tls=level)  # type: ignore[arg-type]
