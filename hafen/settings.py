"""Django settings of the control plane: SQLite in the data directory by default, PostgreSQL with
HAFEN_DATABASE_URL."""

import secrets

from hafen.config import get_settings, read_or_create_key

_hafen = get_settings()
_hafen.data_dir.mkdir(parents=True, exist_ok=True)

SECRET_KEY = read_or_create_key(
    _hafen.data_dir / "django-secret.key", lambda: secrets.token_urlsafe(50).encode()
).decode()
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", _hafen.web_host]
if _hafen.web_origin:
    ALLOWED_HOSTS.append(_hafen.web_origin.split("://", 1)[-1].split(":")[0].split("/")[0])
    CSRF_TRUSTED_ORIGINS = [_hafen.web_origin]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "ninja",
    "hafen.access",
    "hafen.instances",
    "hafen.logs",
    "hafen.web",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "hafen.web.middleware.RefuseNul",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]
ROOT_URLCONF = "hafen.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": _hafen.django_database()}
# One process serves the web: a local cache is shared by all its threads (the login rate limit).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]
RATELIMIT_VIEW = "hafen.web.views.auth.rate_limited"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 8 * 3600
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _hafen.web_origin.startswith("https://")
SESSION_COOKIE_NAME = f"{_hafen.prefix}_session"
CSRF_COOKIE_NAME = f"{_hafen.prefix}_csrftoken"
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
STATIC_URL = "/static/"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "hafen": {"handlers": ["console"], "level": "INFO"},
        "httpx": {"level": "WARNING"},
        "django.request": {"handlers": ["console"], "level": "ERROR"},
    },
}
