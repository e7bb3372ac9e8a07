"""Who calls the API: a bearer token (read or write scope) or the browser's session (with CSRF)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from ninja.security import APIKeyCookie, HttpBearer

from hafen.access import services as access
from hafen.access.models import Scope
from hafen.access.policy import Actor
from hafen.errors import Unauthenticated


def client_address(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Actor | None:
        try:
            found = access.authenticate_token(token)
        except Unauthenticated:
            return None
        return Actor(user=found.user, via="api", source=client_address(request), scope=found.scope)


class Session(APIKeyCookie):
    """The UI's session, for calls from the browser; CSRF is checked as for any form."""

    param_name = settings.SESSION_COOKIE_NAME

    def authenticate(self, request: HttpRequest, key: str | None) -> Actor | None:
        if request.user.is_authenticated and request.user.is_active:
            return Actor(user=request.user, via="api", source=client_address(request), scope=Scope.WRITE)
        return None
