"""Caddy's JSON configurations of the edge: pure data, no I/O.

The edge is two Caddy servers. The *proxy* has one static configuration: it
sends a request to the web service whose alias is `{host}.{route suffix}` (a
DNS lookup per host, on the networks the proxy is attached to: each instance's
own edge network), and gets certificates on demand for the domains the status
server vouches for. A host that is not a plain lower-case domain name (an IP
literal, `localhost`, a trailing dot, upper case) gets the 404 page from the
proxy itself; a name that is no instance's domain resolves to nothing. Either
way no connection is opened to whatever the name means elsewhere. So adding or removing an
instance never reloads it, and no open connection (websockets included) is
cut. The *status* server holds the per-domain data: it answers the proxy's
"is this domain ours?" question and renders the pages for a domain without a
running web service (starting, stopped, unknown). Only it is reloaded.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["starting", "stopped", "updating", "waking"]

# One admin socket per container (Caddy fills in {env.HOSTNAME}, the container's id): a container
# that is still going away after its replacement started unlinks only its own socket on exit.
ADMIN_SOCKET = "/etc/hafen-edge/admin-{env.HOSTNAME}.sock"
STATUS_ADMIN_SOCKET = "/etc/hafen-edge/status-admin-{env.HOSTNAME}.sock"
# The last names are those of hafen before per-container sockets: a proxy started then (its spec has not
# changed, so it still runs) takes its first configuration of this version through it.
SOCKET_GLOBS = {"proxy": ("admin-*.sock", "admin.sock"), "status": ("status-admin-*.sock", "status-admin.sock")}
STATUS_PORT = 8080
WEB_PORT = 8000
ASK_PATH = "/hafen-ask"
LOCAL_SUFFIXES = ("localhost", "local", "internal", "test")
# What the proxy forwards at all (Caddy's host placeholder has the port stripped): dot-separated
# lower-case DNS labels, the last one starting with a letter, so that no IPv4 form
# (127.0.0.1, 0x7f.1, 2130706433) and no IPv6 literal passes. RE2 and Python agree on it.
HOST_PATTERN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"


@dataclass(frozen=True)
class Route:
    domain: str
    name: str
    mode: Mode


_MESSAGES = {
    "starting": "is starting or restarting. Please try again in a moment.",
    "stopped": "is stopped. Its organiser can start it again.",
    "updating": "is being updated to a new version. This page reloads itself when it is back.",
    "waking": "is waking up. This page reloads itself when it is ready.",
}
# Seconds after which a person's browser reloads the page (and an API client may try again): pages of a
# state that ends by itself. A waking instance answers within seconds.
RETRY_AFTER = 10
RETRY_AFTER_WAKING = 2
# The proxy's access log, in the edge directory: the edge's own record of each instance's requests, read by
# the controller (an instance sleeps when it has none for its idle time, and wakes on the first one).
# Host, time, status, size and duration only: no header, address or path of a person's request.
ACCESS_LOG = "access.log"
ACCESS_LOGGER = "hafen"
ACCESS_LOG_ROLL_MB = 10
# In the edge directory: an empty file per domain of a sleeping instance (see proxy_config).
ASLEEP_DIR = "asleep"
# ... and HOLD_DIR/<seconds>/<domain> for a sleeping or waking instance whose policy holds requests: the
# proxy holds a GET or HEAD request for up to that many seconds until the web service answers. Caddy's
# try_duration is fixed per handler, so the proxy has one route per step.
HOLD_DIR = "hold"
HOLD_STEPS = (5, 10, 20, 30, 60)
# What a held request first asks of the proxy itself, so that the access log (a line per finished request)
# shows the request to the sleeping instance at once and the controller wakes it.
WAKE_PATH = "/.hafen-wake"
# The status server's list of the sleeping instances' domains, one per line, for the edge agents: they keep
# ASLEEP_DIR of the proxies on other nodes from it. Only a host without a dot gets it, and the proxy never
# forwards such a host (HOST_PATTERN): no client reaches it through the edge.
ASLEEP_PATH = "/.hafen-asleep"
ASLEEP_HOST = "hafen-edge-agent"


def _page(title: str, text: str, reload: int = 0) -> str:
    refresh = f"<meta http-equiv=refresh content={reload}>" if reload else ""
    return (
        "<!doctype html><html><head><meta charset=utf-8>" + refresh + "<title>" + html.escape(title) + "</title></head>"
        "<body style='font-family:sans-serif;margin:4em'><h1>" + html.escape(title) + "</h1><p>"
        + html.escape(text) + "</p></body></html>\n"
    )


def _static(status: int, title: str, text: str, reload: int = 0) -> dict[str, Any]:
    return {
        "handler": "static_response",
        "status_code": status,
        "headers": {"Content-Type": ["text/html; charset=utf-8"], "Cache-Control": ["no-store"]},
        "body": _page(title, text, reload),
    }


def _not_found() -> dict[str, Any]:
    return _static(404, "No such instance", "There is no instance at this address.")


def _unavailable(route: Route) -> dict[str, Any]:
    retry = RETRY_AFTER_WAKING if route.mode == "waking" else RETRY_AFTER
    title = f"{route.name} is waking up" if route.mode == "waking" else f"{route.name} is unavailable"
    handler = _static(503, title, f"The instance {route.name} {_MESSAGES[route.mode]}",
                      reload=0 if route.mode == "stopped" else retry)
    handler["headers"]["Retry-After"] = [str(retry)]
    return handler


def build(routes: list[Route], asleep: Iterable[str] = ()) -> dict[str, Any]:
    """The status server's configuration: the known domains and their pages, and the sleepers' domains."""
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
    caddy_routes.append({
        "match": [{"host": [ASLEEP_HOST], "path": [ASLEEP_PATH]}],
        "handle": [{"handler": "static_response", "status_code": 200,
                    "headers": {"Content-Type": ["text/plain"]}, "body": "".join(f"{d}\n" for d in sorted(asleep))}],
        "terminal": True,
    })
    caddy_routes.append({"handle": [_not_found()]})
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


def upstream_name(host: str, route_suffix: str) -> str:
    """The DNS name the proxy looks up for a host: fully qualified, so no search domain applies."""
    return f"{host}.{route_suffix}."


def access_logging(directory: str = "/etc/hafen-edge") -> dict[str, Any]:
    """The proxy's logs: its access log alone in a file that rolls over, the rest as before."""
    deleted = ("request>headers", "request>uri", "request>remote_ip", "request>remote_port", "request>tls",
               "resp_headers", "user_id")
    return {"logs": {
        "default": {"exclude": [f"http.log.access.{ACCESS_LOGGER}"]},
        ACCESS_LOGGER: {
            "writer": {"output": "file", "filename": f"{directory}/{ACCESS_LOG}",
                       "roll_size_mb": ACCESS_LOG_ROLL_MB, "roll_keep": 1},
            "encoder": {"format": "filter", "wrap": {"format": "json"},
                        "fields": {field: {"filter": "delete"} for field in deleted}},
            "include": [f"http.log.access.{ACCESS_LOGGER}"],
        },
    }}


def _to_web(route_suffix: str, try_duration: str) -> dict[str, Any]:
    return {
        "handler": "reverse_proxy",
        # The DNS answer (the healthy web tasks) is kept 250 ms: a woken or new replica gets
        # requests that soon, and one that went away is forgotten as soon.
        "dynamic_upstreams": {
            "source": "a", "name": upstream_name("{http.request.host}", route_suffix),
            "port": str(WEB_PORT), "refresh": "250ms",
        },
        # Rides over a replica that goes away during a rolling update; also how long a host without a
        # running web service waits (1 s, or a held request's step) for the status server's page.
        "load_balancing": {
            "selection_policy": {"policy": "round_robin"}, "try_duration": try_duration, "try_interval": "250ms",
        },
    }


def _held(host_guard: dict[str, Any], hold_root: str, step: int, route_suffix: str) -> dict[str, Any]:
    """A GET or HEAD to a sleeping instance that holds requests for `step` seconds: a request to the proxy
    itself at WAKE_PATH (logged at once: the wake), then the web service, tried for up to `step` seconds.
    Methods with a body are not held (the wake's request would read it): they get the waking page."""
    wake = {"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:80"}],
            "rewrite": {"method": "GET", "uri": WAKE_PATH},
            # its 204 is not the answer: a route that writes nothing hands the request on to the web
            "handle_response": [{"match": {"status_code": [2]}, "routes": [{"handle": [{"handler": "vars"}]}]}]}
    match = {**host_guard, "method": ["GET", "HEAD"],
             "file": {"root": f"{hold_root}/{step}", "try_files": ["/{http.request.host}"]}}
    return {"match": [match], "handle": [wake, _to_web(route_suffix, f"{step}s")], "terminal": True}


def proxy_config(status_host: str, route_suffix: str, acme_email: str = "") -> dict[str, Any]:
    """The proxy's configuration; it depends on settings only, never on the instances."""
    host_guard = {"vars_regexp": {"{http.request.host}": {"pattern": HOST_PATTERN}}}
    # No web service answers for the host: the status server tells why.
    status = {"handler": "reverse_proxy", "upstreams": [{"dial": f"{status_host}:{STATUS_PORT}"}]}
    hold_root = f"/etc/hafen-edge/{HOLD_DIR}"
    held = {"file": {"root": hold_root, "try_files": [f"/{step}/{{http.request.host}}" for step in HOLD_STEPS]}}
    routes = [
        # The held request's note to the access log (answered here, so it never reaches the instance).
        {"match": [{**host_guard, **held, "path": [WAKE_PATH]}],
         "handle": [{"handler": "static_response", "status_code": 204}], "terminal": True},
        *[_held(host_guard, hold_root, step, route_suffix) for step in HOLD_STEPS],
        # A sleeping instance (a file of its domain's name in ASLEEP_DIR, which the controller keeps): the
        # waking page at once, not after the second the proxy would wait for its web service.
        {"match": [{**host_guard, "file": {"root": f"/etc/hafen-edge/{ASLEEP_DIR}",
                                           "try_files": ["/{http.request.host}"]}}],
         "handle": [status], "terminal": True},
        {"match": [host_guard], "handle": [_to_web(route_suffix, "1s")], "terminal": True},
        {"handle": [_not_found()]},
    ]
    errors = {"routes": [{"handle": [status]}]}
    local = [f"*.{suffix}" for suffix in LOCAL_SUFFIXES] + ["localhost"]
    policies: list[dict[str, Any]] = []
    if acme_email:
        policies.append({"subjects": local, "issuers": [{"module": "internal"}], "on_demand": True})
        policies.append({"issuers": [{"module": "acme", "email": acme_email}], "on_demand": True})
    else:
        policies.append({"issuers": [{"module": "internal"}], "on_demand": True})
    logs = {"default_logger_name": ACCESS_LOGGER}
    return {
        "admin": {"listen": f"unix/{ADMIN_SOCKET}", "origins": ["localhost"]},
        "logging": access_logging(),
        "apps": {
            "http": {
                "http_port": 80,
                "https_port": 443,
                "servers": {
                    "http": {"listen": [":80"], "routes": routes, "errors": errors, "logs": logs,
                             "automatic_https": {"disable": True}},
                    "https": {"listen": [":443"], "routes": routes, "errors": errors, "logs": logs,
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
