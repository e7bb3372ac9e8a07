"""Fleet rollouts: the list and the form that starts one, a rollout's page with each instance's progress
(polled by htmx until it has ended), and its Pause, Resume and Cancel buttons."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from hafen.access import policy
from hafen.access.policy import Action, Actor
from hafen.errors import HafenError
from hafen.instances import rollouts
from hafen.instances.models import Rollout
from hafen.web.forms import RolloutForm, updatable_organisations
from hafen.web.views.common import actor, refused, ui_view

CONTROLS = {"pause": rollouts.pause, "resume": rollouts.resume, "cancel": rollouts.cancel}
# which buttons a rollout in each state shows
BUTTONS = {"scheduled": ("pause", "cancel"), "running": ("pause", "cancel"), "paused": ("resume", "cancel")}


@ui_view
def index(request: HttpRequest) -> HttpResponse:
    who = actor(request)
    organisations = updatable_organisations(who)
    form = RolloutForm(organisations, request.POST or None)
    if request.method == "POST" and organisations and form.is_valid():
        data = form.cleaned_data
        try:
            rollout = rollouts.create(who, data["app"], data["version"], organisation=data["organisation"] or None,
                                      canary=data["canary"], canaries=data["canaries"].split(), batch=data["batch"],
                                      start_at=data["start_at"])
        except HafenError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Rollout {rollout.pk} of {rollout.app} to {rollout.version} planned.")
            return redirect("rollout", rollout.pk)
    listed = [rollouts.describe(r) for r in rollouts.listing(who)]
    return render(request, "web/rollouts.html", {"rollouts": listed, "form": form if organisations else None})


def _may_control(who: Actor, rollout: Rollout) -> bool:
    return who.is_operator or (rollout.organisation_id is not None
                               and Action.UPDATE in policy.actions(who, rollout.organisation_id))


def _context(request: HttpRequest, rollout_id: int) -> dict[str, Any]:
    who = actor(request)
    rollout = rollouts.get(who, rollout_id)
    data = rollouts.describe(rollout)
    total = len(data["items"])
    done = sum(1 for item in data["items"] if item["state"] in rollouts.FINAL_ITEMS)
    return {
        "r": data,
        "done": data["state"] not in rollouts.ACTIVE,
        "items_done": done,
        "percent": round(100 * done / total) if total else 100,
        "buttons": BUTTONS.get(data["state"], ()) if _may_control(who, rollout) else (),
    }


@ui_view
def detail(request: HttpRequest, rollout_id: int) -> HttpResponse:
    return render(request, "web/rollout.html", _context(request, rollout_id))


@ui_view
def progress(request: HttpRequest, rollout_id: int) -> HttpResponse:
    return render(request, "web/_rollout.html", _context(request, rollout_id))


@require_POST
@ui_view
def control(request: HttpRequest, rollout_id: int, action: str) -> HttpResponse:
    try:
        rollout = CONTROLS[action](actor(request), rollout_id)
    except HafenError as exc:
        return refused(request, exc, "rollout", rollout_id)
    messages.success(request, f"Rollout {rollout.pk} is {rollout.state}.")
    return redirect("rollout", rollout.pk)
