"""What every UI view needs: the actor of the request, login and 404 handling, paging, one-time secrets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Page, Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.utils.cache import add_never_cache_headers
from django_htmx.http import HttpResponseClientRedirect

from hafen.access.policy import Actor
from hafen.errors import HafenError, NotFound

View = TypeVar("View", bound=Callable[..., HttpResponse])


def actor(request: HttpRequest) -> Actor:
    return Actor(user=request.user, via="ui", source=str(request.META.get("REMOTE_ADDR", "")))


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def ui_view(view: View) -> View:
    """Require a signed-in user and turn NotFound into the 404 page.

    A poll from htmx whose session has expired gets a client redirect to the
    login page, so that the login form is not swapped into a table cell.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            if is_htmx(request):
                return HttpResponseClientRedirect(resolve_url(settings.LOGIN_URL))
            return redirect_to_login(request.get_full_path())
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def refused(request: HttpRequest, exc: HafenError, to: str, *args: Any) -> HttpResponse:
    """Show the error's one line on the page the user came from; what the user may not see is not found."""
    if isinstance(exc, NotFound):
        raise Http404(str(exc)) from exc
    messages.error(request, str(exc))
    return redirect(to, *args)


def paginate(request: HttpRequest, items: Sequence[Any] | Any, per_page: int) -> Page:
    return Paginator(items, per_page).get_page(request.GET.get("page"))


def query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def shown_once(request: HttpRequest, title: str, secrets: list[tuple[str, str]], note: str, back: str
               ) -> HttpResponse:
    """A page with a secret that is shown this once; never cached, never put in a message or the session."""
    response = render(request, "web/shown_once.html",
                      {"title": title, "secrets": secrets, "note": note, "back": back})
    add_never_cache_headers(response)
    return response
