from django.urls import path

from hafen.web.views import health

urlpatterns = [path("healthz", health.healthz, name="healthz")]
