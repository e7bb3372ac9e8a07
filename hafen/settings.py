"""Django settings of the control plane: SQLite in the data directory by default."""

import secrets

from hafen.config import get_settings, read_or_create_key

_hafen = get_settings()
_hafen.data_dir.mkdir(parents=True, exist_ok=True)

SECRET_KEY = read_or_create_key(
    _hafen.data_dir / "django-secret.key", lambda: secrets.token_urlsafe(50).encode()
).decode()
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "hafen.instances"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "hafen.web.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_hafen.db_path),
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "hafen": {"handlers": ["console"], "level": "INFO"},
        "httpx": {"level": "WARNING"},
    },
}
