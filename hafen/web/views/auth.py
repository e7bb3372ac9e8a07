"""Signing in (rate limited per address) and out."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_ratelimit.decorators import ratelimit
from django_ratelimit.exceptions import Ratelimited

from hafen.config import get_settings


def _login_rate(group: str, request: HttpRequest) -> str:
    return get_settings().login_rate


def rate_limited(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "web/rate_limited.html", status=429)


_login = ratelimit(key="ip", rate=_login_rate, method="POST", block=True)(
    auth_views.LoginView.as_view(template_name="web/login.html", redirect_authenticated_user=True)
)


def login(request: HttpRequest) -> HttpResponse:
    """Django's login view; over the rate it answers 429 here, as no ratelimit middleware is installed."""
    try:
        return _login(request)
    except Ratelimited as exc:
        return rate_limited(request, exc)


logout = auth_views.LogoutView.as_view()
