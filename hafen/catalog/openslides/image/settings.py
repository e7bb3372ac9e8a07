"""OpenSlides settings for a hafen instance.

Credentials come from Docker secrets under /run/secrets, addresses from the
environment the stack template sets; nothing secret is baked into the image.
"""

import os
from pathlib import Path

from openslides.global_settings import *  # noqa: F401,F403


def _secret(name: str) -> str:
    return Path("/run/secrets", name).read_text().strip()


OPENSLIDES_USER_DATA_DIR = "/data"
SECRET_KEY = _secret("secret_key")
DEBUG = False
RESET_PASSWORD_VERBOSE_ERRORS = False
DATA_UPLOAD_MAX_MEMORY_SIZE = 104857600

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("DB_NAME", "openslides"),
        "USER": os.environ.get("DB_USER", "openslides"),
        "PASSWORD": _secret("db_password"),
        "HOST": os.environ.get("DB_HOST", "db"),
        "PORT": "5432",
        "USE_TZ": False,
    }
}

if os.environ.get("HAFEN_SETUP") == "1":
    # The one-off setup job's migrations need no synchronous commits: a crash mid-setup
    # leaves nothing but a job that runs again. Halves the time of a first migration.
    DATABASES["default"]["OPTIONS"] = {"options": "-c synchronous_commit=off"}

_redis_host = os.environ.get("REDIS_HOST", "redis")
use_redis = True
REDIS_ADDRESS = f"redis://{_redis_host}:6379/0"
AMOUNT_REPLICAS = 1
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [(_redis_host, 6379)], "capacity": 100000},
    },
}
SESSION_ENGINE = "redis_sessions.session"
SESSION_REDIS = {
    "host": _redis_host,
    "port": 6379,
    "db": 0,
    "prefix": "session",
    "socket_timeout": 2,
}

# Mail through hafen's relay (hafen/mail/relay.py): its address, the login and the sender from the stack's
# environment, the password a secret. The relay sets the sender to the instance's address in any case.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _secret("smtp_password") if Path("/run/secrets/smtp_password").exists() else ""
EMAIL_USE_TLS = EMAIL_USE_SSL = False  # the relay is on the instance's own internal network
EMAIL_TIMEOUT = 30
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "noreply@localhost")

ENABLE_SAML = False
ENABLE_ELECTRONIC_VOTING = True
TIME_ZONE = os.environ.get("TIME_ZONE", "Europe/Berlin")

STATICFILES_DIRS = [os.path.join(OPENSLIDES_USER_DATA_DIR, "static")] + STATICFILES_DIRS  # noqa: F405
STATIC_ROOT = os.path.join(OPENSLIDES_USER_DATA_DIR, "collected-static")
MEDIA_ROOT = os.path.join(OPENSLIDES_USER_DATA_DIR, "media", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "{asctime} [{levelname}] {name} {message}", "style": "{"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django": {"handlers": ["console"], "level": os.getenv("DJANGO_LOG_LEVEL", "INFO")},
        "openslides": {"handlers": ["console"], "level": os.getenv("OPENSLIDES_LOG_LEVEL", "INFO")},
    },
}

SETTINGS_FILEPATH = __file__
