from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "hafen.web"
    label = "web"
