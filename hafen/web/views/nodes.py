"""The swarm's nodes (operators only): resources, labels, drains with each instance's downtime, evacuation."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from hafen.access.policy import Actor
from hafen.errors import HafenError
from hafen.instances import nodes
from hafen.web.views.common import actor, refused, ui_view


def _operator(request: HttpRequest) -> Actor:
    who = actor(request)
    if not who.is_operator:
        raise Http404("no such page")
    return who


def _context(who: Actor) -> dict[str, object]:
    return {"nodes": nodes.list_nodes(who), "moves": nodes.recent_moves(who)}


@ui_view
def index(request: HttpRequest) -> HttpResponse:
    who = _operator(request)
    try:
        context = {**_context(who), "join": nodes.join_command(who)}
    except HafenError as exc:  # the engine does not answer: say so on the page
        context = {"nodes": [], "moves": [], "join": None, "problem": str(exc)}
    return render(request, "web/nodes.html", context)


@ui_view
def rows(request: HttpRequest) -> HttpResponse:
    """The part of the page that is polled while drains run."""
    who = _operator(request)
    try:
        context = _context(who)
    except HafenError as exc:
        context = {"nodes": [], "moves": [], "problem": str(exc)}
    return render(request, "web/_node_rows.html", context)


@require_POST
@ui_view
def label(request: HttpRequest, node: str) -> HttpResponse:
    who = _operator(request)
    try:
        nodes.label(who, node, request.POST.get("changes", "").split())
    except HafenError as exc:
        return refused(request, exc, "nodes")
    messages.success(request, f"Labels of {node} changed.")
    return redirect("nodes")


@require_POST
@ui_view
def drain(request: HttpRequest, node: str) -> HttpResponse:
    who = _operator(request)
    try:
        result = nodes.drain(who, node, confirm=request.POST.get("confirm", ""))
    except HafenError as exc:
        return refused(request, exc, "nodes")
    left = f" Not moved (not running): {', '.join(result['left'])}." if result["left"] else ""
    messages.success(request, f"Draining {result['node']}: {len(result['moves'])} instance(s) to move.{left}")
    return redirect("nodes")


@require_POST
@ui_view
def activate(request: HttpRequest, node: str) -> HttpResponse:
    who = _operator(request)
    try:
        nodes.activate(who, node)
    except HafenError as exc:
        return refused(request, exc, "nodes")
    messages.success(request, f"{node} takes instances again.")
    return redirect("nodes")


@ui_view
def evacuate(request: HttpRequest, node: str) -> HttpResponse:
    """GET: what an evacuation would restore and lose; POST (with the node's name typed): do it."""
    who = _operator(request)
    try:
        if request.method == "POST":
            result = nodes.evacuate(who, node, confirm=request.POST.get("confirm", ""))
            skipped = f" No verified backup, not evacuated: {', '.join(result['skipped'])}." \
                if result["skipped"] else ""
            messages.success(request, f"Evacuating {result['node']}: {len(result['operations'])} instance(s)."
                             + skipped)
            return redirect("nodes")
        plan = nodes.evacuation_plan(who, node)
    except HafenError as exc:
        return refused(request, exc, "nodes")
    return render(request, "web/node_evacuate.html", {"plan": plan})


@require_POST
@ui_view
def remove(request: HttpRequest, node: str) -> HttpResponse:
    who = _operator(request)
    try:
        nodes.remove(who, node)
    except HafenError as exc:
        return refused(request, exc, "nodes")
    messages.success(request, f"{node} removed from the swarm.")
    return redirect("nodes")
