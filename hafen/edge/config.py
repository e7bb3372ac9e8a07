"""Caddy's JSON configurations of the edge: pure data, no I/O.

The edge is two Caddy servers. The *proxy* has one static configuration: it
sends every request to the web service whose network alias on the edge network
is the request's host (a DNS lookup per host), and gets certificates on demand
for the domains the status server vouches for. So adding or removing an
instance never reloads it, and no open connection (websockets included) is
cut. The *status* server holds the per-domain data: it answers the proxy's
"is this domain ours?" question and renders the pages for a domain without a
running web service (starting, stopped, unknown). Only it is reloaded.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["starting", "stopped"]

ADMIN_SOCKET = "/etc/hafen-edge/admin.sock"
STATUS_ADMIN_SOCKET = "/etc/hafen-edge/status-admin.sock"
STATUS_PORT = 8080
WEB_PORT = 8000
ASK_PATH = "/hafen-ask"
LOCAL_SUFFIXES = ("localhost", "local", "internal", "test")


@dataclass(frozen=True)
class Route:
    domain: str
    name: str
    mode: Mode


_MESSAGES = {
    "starting": "is starting or restarting. Please try again in a moment.",
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


def _unavailable(route: Route) -> dict[str, Any]:
    handler = _static(503, f"{route.name} is unavailable", f"The instance {route.name} {_MESSAGES[route.mode]}")
    handler["headers"]["Retry-After"] = ["10"]
    return handler


def build(routes: list[Route]) -> dict[str, Any]:
    """The status server's configuration: the known domains and their pages."""
    ordered = sorted(routes, key=lambda r: r.domain)
    caddy_routes: list[dict[str, Any]] = []
    if ordered:
        caddy_routes.append(
            {
                "match": [{"path": [ASK_PATH], "query": {"domain": [r.domain for r in ordered]}}],
                "handle": [{"handler": "static_response", "status_code": 200}],
                "terminal": True,
            }
        )
    caddy_routes += [
        {"match": [{"host": [r.domain]}], "handle": [_unavailable(r)], "terminal": True} for r in ordered
    ]
    caddy_routes.append({"handle": [_static(404, "No such instance", "There is no instance at this address.")]})
    return {
        "admin": {"listen": f"unix/{STATUS_ADMIN_SOCKET}", "origins": ["localhost"]},
        "apps": {
            "http": {
                "servers": {
                    "status": {
                        "listen": [f":{STATUS_PORT}"],
                        "routes": caddy_routes,
                        "automatic_https": {"disable": True},
                    }
                }
            }
        },
    }


def proxy_config(status_host: str, acme_email: str = "") -> dict[str, Any]:
    """The proxy's configuration; it depends on settings only, never on the instances."""
    routes = [
        {
            "handle": [
                {
                    "handler": "reverse_proxy",
                    "dynamic_upstreams": {
                        "source": "a", "name": "{http.request.host}", "port": str(WEB_PORT), "refresh": "1s",
                    },
                    # Rides over a replica that goes away during a rolling update; also how long a
                    # host without a running web service waits for the status server's page.
                    "load_balancing": {
                        "selection_policy": {"policy": "round_robin"}, "try_duration": "1s", "try_interval": "250ms",
                    },
                }
            ]
        }
    ]
    # No web service answers for the host: the status server tells why.
    status = {"handler": "reverse_proxy", "upstreams": [{"dial": f"{status_host}:{STATUS_PORT}"}]}
    errors = {"routes": [{"handle": [status]}]}
    local = [f"*.{suffix}" for suffix in LOCAL_SUFFIXES] + ["localhost"]
    policies: list[dict[str, Any]] = []
    if acme_email:
        policies.append({"subjects": local, "issuers": [{"module": "internal"}], "on_demand": True})
        policies.append({"issuers": [{"module": "acme", "email": acme_email}], "on_demand": True})
    else:
        policies.append({"issuers": [{"module": "internal"}], "on_demand": True})
    return {
        "admin": {"listen": f"unix/{ADMIN_SOCKET}", "origins": ["localhost"]},
        "apps": {
            "http": {
                "http_port": 80,
                "https_port": 443,
                "servers": {
                    "http": {"listen": [":80"], "routes": routes, "errors": errors,
                             "automatic_https": {"disable": True}},
                    "https": {"listen": [":443"], "routes": routes, "errors": errors,
                              "automatic_https": {"disable_redirects": True}, "tls_connection_policies": [{}]},
                },
            },
            "tls": {
                "automation": {
                    "policies": policies,
                    "on_demand": {"ask": f"http://{status_host}:{STATUS_PORT}{ASK_PATH}"},
                }
            },
        },
    }


def digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
