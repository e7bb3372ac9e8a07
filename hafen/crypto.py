"""Encryption of instance secrets at rest with a key kept in the data directory."""

import secrets
from functools import cache

from cryptography.fernet import Fernet

from hafen.config import get_settings, read_or_create_key


@cache
def _fernet() -> Fernet:
    return Fernet(read_or_create_key(get_settings().key_path, Fernet.generate_key))


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
