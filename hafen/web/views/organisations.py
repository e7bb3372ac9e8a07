"""Organisations and their members; outsiders get the 404 page."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from hafen.access import policy
from hafen.access import services as access
from hafen.access.models import Role
from hafen.access.policy import Action
from hafen.errors import HafenError, InvalidInput
from hafen.instances import rollouts
from hafen.web.forms import MemberForm, OrganisationForm
from hafen.web.views.common import actor, refused, shown_once, ui_view


@ui_view
def index(request: HttpRequest) -> HttpResponse:
    who = actor(request)
    form = OrganisationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            created = access.create_organisation(who, form.cleaned_data["slug"], form.cleaned_data["name"])
        except HafenError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Organisation {created.slug} created.")
            return redirect("organisation", created.slug)
    organisations = access.organisations_with_counts(who)
    return render(request, "web/organisations.html",
                  {"organisations": organisations, "form": form if who.is_operator else None})


@ui_view
def detail(request: HttpRequest, slug: str) -> HttpResponse:
    who = actor(request)
    organisation = access.get_organisation(who, slug)
    may_manage = Action.MANAGE_MEMBERS in policy.actions(who, organisation.id)
    return render(request, "web/organisation.html", {
        "organisation": organisation,
        "members": access.members(who, slug),
        "may_manage": may_manage,
        "form": MemberForm() if may_manage else None,
        "roles": Role.choices,
        "may_label": who.is_operator,
        "window": rollouts.describe_window(organisation),
        "may_window": Action.UPDATE in policy.actions(who, organisation.id),
        "webhook": access.webhook_display(access.alert_webhook(organisation)),
    })


@require_POST
@ui_view
def label(request: HttpRequest, slug: str) -> HttpResponse:
    """Operators: set or remove the node labels the organisation's new instances ask for."""
    try:
        access.set_node_labels(actor(request), slug, request.POST.get("changes", "").split())
    except HafenError as exc:
        return refused(request, exc, "organisation", slug)
    messages.success(request, f"Node labels of {slug} changed.")
    return redirect("organisation", slug)


@require_POST
@ui_view
def window(request: HttpRequest, slug: str) -> HttpResponse:
    """Operators and the organisation's admins: when rollouts may update its instances ("none": at any time)."""
    clear = "none" in request.POST
    cron = "" if clear else request.POST.get("cron", "").strip()
    try:
        minutes = 0 if clear else int(request.POST.get("minutes", "") or 0)
        if not clear and not cron:
            raise InvalidInput('give the cron expression (UTC) at which the window opens, e.g. "0 2 * * 6"')
    except ValueError:
        access.get_organisation(actor(request), slug)
        return refused(request, InvalidInput("minutes: give a whole number"), "organisation", slug)
    except InvalidInput as exc:
        access.get_organisation(actor(request), slug)
        return refused(request, exc, "organisation", slug)
    try:
        organisation = rollouts.set_window(actor(request), slug, cron, minutes)
    except HafenError as exc:
        return refused(request, exc, "organisation", slug)
    if organisation.update_window:
        messages.success(request, f"Update window of {slug} set.")
    else:
        messages.success(request, f"{slug}: rollouts update its instances at any time.")
    return redirect("organisation", slug)


@require_POST
@ui_view
def webhook(request: HttpRequest, slug: str) -> HttpResponse:
    """Operators and the organisation's admins: where the alerts about its instances are posted too."""
    url = "" if "off" in request.POST else request.POST.get("url", "").strip()
    if not url and "off" not in request.POST:
        access.get_organisation(actor(request), slug)
        return refused(request, InvalidInput("give the webhook's URL (http:// or https://)"), "organisation", slug)
    try:
        access.set_alert_webhook(actor(request), slug, url)
    except HafenError as exc:
        return refused(request, exc, "organisation", slug)
    messages.success(request, f"Alert webhook of {slug} {'set' if url else 'removed'}.")
    return redirect("organisation", slug)


@require_POST
@ui_view
def add_member(request: HttpRequest, slug: str) -> HttpResponse:
    form = MemberForm(request.POST)
    if not form.is_valid():
        access.get_organisation(actor(request), slug)
        problems = "; ".join(f"{field}: {' '.join(str(e) for e in errors)}" for field, errors in form.errors.items())
        return refused(request, InvalidInput(problems), "organisation", slug)
    data = form.cleaned_data
    try:
        account = access.add_member(actor(request), slug, data["username"], data["role"],
                                    data["can_read_credentials"], data["email"])
    except HafenError as exc:
        return refused(request, exc, "organisation", slug)
    if account.password is None:
        messages.success(request, f"{data['username']} added to {slug}.")
        return redirect("organisation", slug)
    return shown_once(
        request, f"New account {data['username']}", [("user name", data["username"]), ("password", account.password)],
        "Shown this once: hand it over to its owner, who signs in with it here.",
        reverse("organisation", args=[slug]),
    )


@require_POST
@ui_view
def change_member(request: HttpRequest, slug: str, username: str) -> HttpResponse:
    try:
        access.change_member(actor(request), slug, username, request.POST.get("role") or None,
                             "can_read_credentials" in request.POST)
    except HafenError as exc:
        return refused(request, exc, "organisation", slug)
    messages.success(request, f"{username} changed.")
    return redirect("organisation", slug)


@require_POST
@ui_view
def remove_member(request: HttpRequest, slug: str, username: str) -> HttpResponse:
    try:
        access.remove_member(actor(request), slug, username)
    except HafenError as exc:
        return refused(request, exc, "organisation", slug)
    messages.success(request, f"{username} removed from {slug}.")
    return redirect("organisation", slug)
