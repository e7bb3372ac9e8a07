"""Encryption of instance secrets at rest with a key kept in the data directory."""

import os
import secrets
from functools import cache

from cryptography.fernet import Fernet

from hafen.config import get_settings


@cache
def _fernet() -> Fernet:
    path = get_settings().key_path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def generate_password(length: int = 20) -> str:
    """A password without look-alike characters, easy to read out and type."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def generate_key(length: int = 50) -> str:
    return secrets.token_urlsafe(length)
