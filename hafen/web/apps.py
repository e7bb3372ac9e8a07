from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "hafen.web"
    label = "web"

    def ready(self) -> None:
        from hafen.web import signals  # noqa: F401  (connects the audit receivers)
