"""Refuse a request that carries a NUL character, before any view sees it.

PostgreSQL's text cannot hold NUL (SQLite's can), so a NUL in a path, a query or a JSON body
would otherwise fail deep in a query as a server error; Django's forms already refuse it in
form fields. The API answers in its error format, the UI with a plain 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

MESSAGE = "the request contains a NUL character"


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _carries_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path or any(_has_nul(k) or _has_nul(v) for k, v in request.GET.lists()):
        return True
    if request.content_type == "application/json" and request.body:
        try:
            return _has_nul(json.loads(request.body))
        except ValueError:
            return False  # not JSON: the API says so itself
    return False


class RefuseNul:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _carries_nul(request):
            if request.path.startswith("/api/"):
                return JsonResponse({"error": {"code": "invalid", "message": MESSAGE}}, status=400)
            return HttpResponseBadRequest(MESSAGE)
        return self.get_response(request)
