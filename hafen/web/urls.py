from django.urls import path

from hafen.web import views

urlpatterns = [path("healthz", views.healthz, name="healthz")]
