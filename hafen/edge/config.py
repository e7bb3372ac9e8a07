"""Caddy's JSON configuration for a set of routes: pure data, no I/O."""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["proxy", "starting", "stopped"]

ADMIN_SOCKET = "/etc/hafen-edge/admin.sock"


@dataclass(frozen=True)
class Route:
    domain: str
    name: str
    mode: Mode
    upstream: str = ""


_MESSAGES = {
    "starting": "is starting. Please try again in a moment.",
    "stopped": "is stopped. Its organiser can start it again.",
}


def _page(title: str, text: str) -> str:
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>" + html.escape(title) + "</title></head>"
        "<body style='font-family:sans-serif;margin:4em'><h1>" + html.escape(title) + "</h1><p>"
        + html.escape(text) + "</p></body></html>\n"
    )


def _static(status: int, title: str, text: str) -> dict[str, Any]:
    return {
        "handler": "static_response",
        "status_code": status,
        "headers": {"Content-Type": ["text/html; charset=utf-8"], "Cache-Control": ["no-store"]},
        "body": _page(title, text),
    }


def _handler(route: Route) -> dict[str, Any]:
    if route.mode == "proxy":
        host, port = route.upstream.rsplit(":", 1)
        return {
            "handler": "reverse_proxy",
            "dynamic_upstreams": {"source": "a", "name": host, "port": port, "refresh": "2s"},
            "load_balancing": {"selection_policy": {"policy": "round_robin"}, "try_duration": "5s"},
        }
    handler = _static(503, f"{route.name} is unavailable", f"The instance {route.name} {_MESSAGES[route.mode]}")
    handler["headers"]["Retry-After"] = ["10"]
    return handler


def _is_local(domain: str) -> bool:
    return domain == "localhost" or domain.endswith((".localhost", ".local", ".internal", ".test"))


def build(routes: list[Route], acme_email: str = "") -> dict[str, Any]:
    """The whole proxy configuration: one route per domain, then a 404 for any other."""
    ordered = sorted(routes, key=lambda r: r.domain)
    caddy_routes: list[dict[str, Any]] = [
        {"match": [{"host": [r.domain]}], "handle": [_handler(r)], "terminal": True} for r in ordered
    ]
    caddy_routes.append(
        {"handle": [_static(404, "No such instance", "There is no instance at this address.")]}
    )
    domains = [r.domain for r in ordered]
    public = [d for d in domains if not _is_local(d)] if acme_email else []
    internal = [d for d in domains if d not in public]
    policies: list[dict[str, Any]] = []
    if internal:
        policies.append({"subjects": internal, "issuers": [{"module": "internal"}]})
    if public:
        policies.append({"subjects": public, "issuers": [{"module": "acme", "email": acme_email}]})
    config: dict[str, Any] = {
        "admin": {"listen": f"unix/{ADMIN_SOCKET}", "origins": ["localhost"]},
        "apps": {
            "http": {
                "http_port": 80,
                "https_port": 443,
                "servers": {
                    "http": {"listen": [":80"], "routes": caddy_routes, "automatic_https": {"disable": True}},
                    "https": {
                        "listen": [":443"],
                        "routes": caddy_routes,
                        "automatic_https": {"disable_redirects": True},
                    },
                }
            },
        },
    }
    if policies:
        config["apps"]["tls"] = {"automation": {"policies": policies}}
    return config


def digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
