"""All URLs of the control plane: the REST API under /api/v1/, the UI everywhere else."""

from django.urls import include, path

from hafen.api.v1 import api

urlpatterns = [
    path("api/v1/", api.urls),
    path("", include("hafen.web.urls")),
]
