"""The apps' mail relay (operators only): its state, the smarthost, the rate limit, each instance's sender, and
a test mail."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from hafen.access.policy import Actor
from hafen.errors import HafenError
from hafen.instances import mail
from hafen.web.views.common import actor, refused, ui_view


def _operator(request: HttpRequest) -> Actor:
    who = actor(request)
    if not who.is_operator:
        raise Http404("no such page")
    return who


@ui_view
def index(request: HttpRequest) -> HttpResponse:
    who = _operator(request)
    try:
        context: dict[str, object] = {"mail": mail.status(who)}
    except HafenError as exc:  # the engine does not answer: say so on the page
        context = {"mail": None, "problem": str(exc)}
    return render(request, "web/mail.html", context)


@require_POST
@ui_view
def test(request: HttpRequest) -> HttpResponse:
    who = _operator(request)
    try:
        sent = mail.send_test(who, request.POST.get("address", ""))
    except HafenError as exc:
        return refused(request, exc, "mail")
    messages.success(request, f"A test mail to {sent['to']} is queued at the relay.")
    return redirect("mail")
