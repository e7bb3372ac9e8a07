from django.apps import AppConfig


class LogsConfig(AppConfig):
    name = "hafen.logs"
    label = "logs"
    default_auto_field = "django.db.models.BigAutoField"
