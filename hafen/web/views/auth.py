from django.http import HttpRequest, HttpResponse


def rate_limited(request: HttpRequest, exception: Exception) -> HttpResponse:
    return HttpResponse("Too many login attempts; wait a minute.", status=429)
