"""Sign-ins and failed sign-ins of the UI, written to the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from hafen.access.models import AuditEntry, Result


def _source(request: HttpRequest | None) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))[:64] if request is not None else ""


def _record(request: HttpRequest | None, action: str, result: Result, username: str, user: User | None,
            message: str = "") -> None:
    AuditEntry.objects.create(user=user, actor=username[:150], via="ui", source=_source(request), action=action,
                              result=result, message=message)


@receiver(user_logged_in, dispatch_uid="hafen-web-login")
def _logged_in(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    _record(request, "login", Result.OK, user.get_username(), user)


@receiver(user_logged_out, dispatch_uid="hafen-web-logout")
def _logged_out(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    if user is not None:
        _record(request, "logout", Result.OK, user.get_username(), user)


@receiver(user_login_failed, dispatch_uid="hafen-web-login-failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None,
                  **kwargs: Any) -> None:
    """Tied to the account when it exists, so that its owner sees attempts on it in the audit log."""
    username = str(credentials.get("username", ""))
    user = User.objects.filter(username=username).first() if username else None
    _record(request, "login", Result.REFUSED, username, user, "wrong user name or password")
