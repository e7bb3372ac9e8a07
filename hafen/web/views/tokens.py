"""The signed-in user's API tokens: each shown once when it is made."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from hafen.access import services as access
from hafen.errors import HafenError
from hafen.web.forms import TokenForm
from hafen.web.views.common import actor, refused, shown_once, ui_view


@ui_view
def index(request: HttpRequest) -> HttpResponse:
    who = actor(request)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            record, token = access.create_token(who, form.cleaned_data["name"], form.cleaned_data["scope"])
        except HafenError as exc:
            form.add_error(None, str(exc))
        else:
            return shown_once(request, f"API token {record.name}", [("token", token)],
                              f"Shown this once; {record.scope} scope. Send it as `Authorization: Bearer TOKEN`.",
                              reverse("tokens"))
    return render(request, "web/tokens.html", {"tokens": access.tokens(who), "form": form})


@require_POST
@ui_view
def revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    try:
        access.revoke_token(actor(request), token_id)
    except HafenError as exc:
        return refused(request, exc, "tokens")
    messages.success(request, "Token revoked.")
    return redirect("tokens")
