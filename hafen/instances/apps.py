from django.apps import AppConfig


class InstancesConfig(AppConfig):
    name = "hafen.instances"
    label = "instances"
