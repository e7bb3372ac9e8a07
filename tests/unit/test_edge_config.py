import re

import pytest

from hafen.controller.edge import route_for
from hafen.edge.config import (
    ASK_PATH,
    HOLD_STEPS,
    STATUS_PORT,
    WAKE_PATH,
    WEB_PORT,
    Route,
    build,
    digest,
    proxy_config,
)
from hafen.errors import EngineError
from hafen.instances import services
from hafen.instances.models import Desired, Instance, Operation, OpState
from tests.unit.conftest import LOCAL


def routes_of(config, server="status"):
    return config["apps"]["http"]["servers"][server]["routes"]


def route_by_host(config, domain):
    matches = [r for r in routes_of(config) if domain in r.get("match", [{}])[0].get("host", [])]
    assert len(matches) == 1, matches
    return matches[0]


def policies_of(config):
    return config["apps"]["tls"]["automation"]["policies"]


# -- the proxy: static, whatever the instances ------------------------------------------------------


def test_proxy_sends_each_host_to_the_web_service_with_that_alias_under_the_route_suffix():
    config = proxy_config("unit-edge-status", "unit-route")
    route = routes_of(config, "http")[-2]
    [handler] = route["handle"]
    assert route["terminal"] is True
    assert handler["handler"] == "reverse_proxy"
    # fully qualified: no search domain of the host's resolver turns it into another name
    assert handler["dynamic_upstreams"] == {
        "source": "a", "name": "{http.request.host}.unit-route.", "port": str(WEB_PORT), "refresh": "250ms",
    }
    assert "upstreams" not in handler  # no static upstream that would pin one task's address


def guard(config):
    [asleep], [forward] = (route["match"] for route in routes_of(config, "http")[-3:-1])
    assert asleep["vars_regexp"] == forward["vars_regexp"]  # the same guard before the sleepers' files
    return forward["vars_regexp"]["{http.request.host}"]["pattern"]


def test_a_sleeping_instances_domain_gets_the_status_servers_page_at_once():
    """Without the second the proxy waits for a web service: its file in the edge directory says it sleeps."""
    config = proxy_config("unit-edge-status", "unit-route")
    asleep = routes_of(config, "http")[-3]
    assert asleep["match"][0]["file"] == {"root": "/etc/hafen-edge/asleep", "try_files": ["/{http.request.host}"]}
    status = {"handler": "reverse_proxy", "upstreams": [{"dial": f"unit-edge-status:{STATUS_PORT}"}]}
    assert asleep["handle"] == [status]
    assert asleep["terminal"] is True


def test_a_sleeping_instance_that_holds_requests_wakes_on_a_note_to_the_log_and_is_waited_for():
    """Its GET or HEAD first asks the proxy itself at WAKE_PATH (answered at once, so the access log shows
    the request while it is still held), then waits for the web service for up to the policy's step."""
    routes = routes_of(proxy_config("unit-edge-status", "unit-route"), "http")
    note, held = routes[0], routes[1:1 + len(HOLD_STEPS)]
    assert note["match"][0]["path"] == [WAKE_PATH]
    assert note["match"][0]["file"]["try_files"] == [f"/{step}/{{http.request.host}}" for step in HOLD_STEPS]
    assert note["handle"] == [{"handler": "static_response", "status_code": 204}]
    forward = routes[-2]["handle"][0]
    for step, route in zip(HOLD_STEPS, held, strict=True):
        [match] = route["match"]
        assert match["method"] == ["GET", "HEAD"]  # a body would be read by the note: not held
        assert match["file"] == {"root": f"/etc/hafen-edge/hold/{step}", "try_files": ["/{http.request.host}"]}
        assert match["vars_regexp"] == routes[-2]["match"][0]["vars_regexp"]
        wake, web = route["handle"]
        assert wake["upstreams"] == [{"dial": "127.0.0.1:80"}]
        assert wake["rewrite"] == {"method": "GET", "uri": WAKE_PATH}
        assert wake["handle_response"][0]["routes"]  # a route that writes nothing: on to the web service
        assert web["dynamic_upstreams"] == forward["dynamic_upstreams"]
        assert web["load_balancing"]["try_duration"] == f"{step}s"
    assert forward["load_balancing"]["try_duration"] == "1s"


def test_the_access_log_keeps_no_header_address_or_path_of_a_request():
    logs = proxy_config("s", "unit-route")["logging"]["logs"]
    access = logs["hafen"]
    assert access["writer"]["filename"] == "/etc/hafen-edge/access.log" and access["writer"]["roll_keep"] == 1
    deleted = {field for field, rule in access["encoder"]["fields"].items() if rule == {"filter": "delete"}}
    assert {"request>headers", "request>uri", "request>remote_ip", "resp_headers"} <= deleted
    assert logs["default"]["exclude"] == access["include"] == ["http.log.access.hafen"]
    for server in ("http", "https"):
        assert proxy_config("s", "unit-route")["apps"]["http"]["servers"][server]["logs"] == {
            "default_logger_name": "hafen"}


@pytest.mark.parametrize("host", ["ev.localhost", "my-event.example.org", "a1.b2.test", "x.y.z.xn--p1ai"])
def test_proxy_guard_lets_lower_case_domain_names_through(host):
    assert re.fullmatch(guard(proxy_config("s", "unit-route")), host)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1", "10.0.0.7", "0x7f000001", "2130706433", "0x7f.1", "127.1", "::1", "[::1]", "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]", "fe80::1%eth0", "localhost", "LOCALHOST", "Ev.localhost", "ev.localhost.",
        "web", "db", "unit-edge", "unit-edge-status", "unit-ev_web", "ev_web", "ev..localhost", ".ev.localhost",
        "-ev.localhost", "ev-.localhost", "ev.localhost:8000", "ev.localhost\n", "", "a" * 64 + ".localhost",
    ],
)
def test_proxy_guard_refuses_anything_but_a_lower_case_domain_name(host):
    """Caddy's host placeholder has the port stripped already; what is left must be a plain name."""
    assert not re.fullmatch(guard(proxy_config("s", "unit-route")), host)


def test_a_host_the_guard_refuses_gets_the_404_page_from_the_proxy_itself():
    for server in ("http", "https"):
        routes = routes_of(proxy_config("s", "unit-route"), server)
        assert len(routes) == 4 + len(HOLD_STEPS)
        assert "match" not in routes[-1]
        [handler] = routes[-1]["handle"]
        assert handler["handler"] == "static_response"  # no upstream: no connection is opened
        assert handler["status_code"] == 404
        assert handler["body"] == routes_of(build([]))[-1]["handle"][0]["body"]


def test_proxy_http_and_https_share_routes_and_fall_back_to_the_status_server():
    config = proxy_config("unit-edge-status", "unit-route")
    assert routes_of(config, "http") == routes_of(config, "https")
    for server in ("http", "https"):
        [error_route] = config["apps"]["http"]["servers"][server]["errors"]["routes"]
        assert error_route["handle"][0]["upstreams"] == [{"dial": f"unit-edge-status:{STATUS_PORT}"}]


def test_proxy_asks_the_status_server_before_issuing_a_certificate():
    config = proxy_config("unit-edge-status", "unit-route")
    on_demand = config["apps"]["tls"]["automation"]["on_demand"]
    assert on_demand["ask"] == f"http://unit-edge-status:{STATUS_PORT}{ASK_PATH}"
    assert all(p["on_demand"] for p in policies_of(config))


def test_without_an_acme_email_every_certificate_comes_from_the_internal_ca():
    assert policies_of(proxy_config("s", "unit-route")) == [{"issuers": [{"module": "internal"}], "on_demand": True}]


def test_with_an_acme_email_local_names_stay_internal_and_public_ones_use_acme():
    policies = policies_of(proxy_config("s", "unit-route", acme_email="ops@example.org"))
    assert policies[0]["issuers"] == [{"module": "internal"}]
    assert "*.localhost" in policies[0]["subjects"] and "*.test" in policies[0]["subjects"]
    assert policies[1] == {"issuers": [{"module": "acme", "email": "ops@example.org"}], "on_demand": True}


def test_proxy_configuration_does_not_depend_on_instances():
    assert digest(proxy_config("s", "unit-route")) == digest(proxy_config("s", "unit-route"))
    with_acme = proxy_config("s", "unit-route", acme_email="ops@example.org")
    assert digest(proxy_config("s", "unit-route")) != digest(with_acme)


# -- the status server: the per-domain data ----------------------------------------------------------


def test_stopped_route_serves_a_503_page_that_says_stopped():
    config = build([Route("ev.localhost", "ev", "stopped")])
    [handler] = route_by_host(config, "ev.localhost")["handle"]
    assert handler["handler"] == "static_response"
    assert handler["status_code"] == 503
    assert "stopped" in handler["body"]
    assert "ev" in handler["body"]
    assert handler["headers"]["Retry-After"] == ["10"]


def test_starting_route_serves_a_503_page_that_says_starting():
    config = build([Route("ev.localhost", "ev", "starting")])
    [handler] = route_by_host(config, "ev.localhost")["handle"]
    assert handler["status_code"] == 503
    assert "starting" in handler["body"]
    assert "stopped" not in handler["body"]


def test_page_escapes_the_instance_name():
    config = build([Route("ev.localhost", "<script>", "stopped")])
    body = route_by_host(config, "ev.localhost")["handle"][0]["body"]
    assert "<script>" not in body
    assert "&lt;script&gt;" in body


def test_ask_route_vouches_for_known_domains_only():
    config = build([Route("b.localhost", "b", "stopped"), Route("a.localhost", "a", "starting")])
    ask = routes_of(config)[0]
    assert ask["match"] == [{"path": [ASK_PATH], "query": {"domain": ["a.localhost", "b.localhost"]}}]
    assert ask["handle"] == [{"handler": "static_response", "status_code": 200}]


def test_last_route_is_a_catch_all_404_and_hosts_are_sorted():
    config = build([Route("b.localhost", "b", "stopped"), Route("a.localhost", "a", "starting")])
    routes = routes_of(config)
    assert len(routes) == 5
    last = routes[-1]
    assert "match" not in last
    assert last["handle"][0]["status_code"] == 404
    assert [r["match"][0]["host"] for r in routes[1:-2]] == [["a.localhost"], ["b.localhost"]]


def test_empty_configuration_has_only_the_404_and_the_empty_list_of_sleepers():
    config = build([])
    assert len(routes_of(config)) == 2
    assert routes_of(config)[0]["handle"][0]["body"] == ""
    assert routes_of(config)[1]["handle"][0]["status_code"] == 404


def test_digest_is_stable_and_independent_of_route_order():
    a = Route("a.localhost", "a", "starting")
    b = Route("b.localhost", "b", "stopped")
    assert digest(build([a, b])) == digest(build([b, a]))


@pytest.mark.parametrize(
    "changed",
    [
        [Route("a.localhost", "a", "stopped")],
        [Route("a.localhost", "a", "starting"), Route("b.localhost", "b", "starting")],
        [],
    ],
)
def test_digest_changes_when_routes_change(changed):
    assert digest(build(changed)) != digest(build([Route("a.localhost", "a", "starting")]))


# -- route_for: what the status server says of an instance ----------------------------------------


def instance(desired, replicas=1):
    return Instance(
        name="ev", app="demo", version="1.0", domain="ev.localhost", desired_state=desired, replicas=replicas
    )


def test_route_for_running_instance_is_starting_for_when_no_web_answers():
    assert route_for(instance(Desired.RUNNING)) == Route("ev.localhost", "ev", "starting")


@pytest.mark.parametrize(("desired", "replicas"), [(Desired.STOPPED, 1), (Desired.STOPPED, 0), (Desired.RUNNING, 0)])
def test_route_for_stopped_or_scaled_to_zero_instance_is_stopped(desired, replicas):
    assert route_for(instance(desired, replicas)) == Route("ev.localhost", "ev", "stopped")


@pytest.mark.parametrize("desired", [Desired.DELETED, Desired.ERASED])
def test_route_for_deleted_or_erased_instance_is_none(desired):
    assert route_for(instance(desired)) is None


# -- the proxy's run-time attachments to the instances' edge networks --------------------------------


def proxy_networks(engine):
    return list(engine.edge_containers("unit").values())


def test_a_replaced_proxy_container_is_attached_again_on_the_next_pass(controller, engine, edge, running_instance):
    running_instance("eve")
    assert edge.probe("eve.localhost", "/health") == 200
    proxy_spec = engine.containers["unit-edge"]

    engine.replace_containers("unit-edge")  # say, the proxy container was replaced
    assert proxy_networks(engine) == [{"unit-edge"}]
    assert edge.probe("eve.localhost", "/health") == 503  # the status server's page: no web reachable
    controller.pass_once()
    assert proxy_networks(engine) == [{"unit-edge", "unit-eve_edge"}]
    assert edge.probe("eve.localhost", "/health") == 200
    # at run time: the proxy container's spec never changed
    assert engine.containers["unit-edge"] is proxy_spec


def test_erase_detaches_the_proxy_before_removing_the_network(controller, engine, edge, running_instance, run):
    running_instance("eve")
    running_instance("other")
    [container] = engine.edge_containers("unit")
    engine.calls.clear()

    op = run(controller, services.erase(LOCAL, "eve"))
    assert op.state == OpState.SUCCEEDED, op.error
    detach = engine.calls.index(f"disconnect_container unit-eve_edge {container}")
    assert detach < engine.calls.index("remove_network unit-eve_edge")
    assert "unit-eve_edge" not in engine.networks
    assert proxy_networks(engine) == [{"unit-edge", "unit-other_edge"}]
    assert edge.probe("other.localhost", "/health") == 200


def test_an_instance_is_not_declared_reachable_before_the_proxy_is_attached(
    controller, engine, edge, monkeypatch, converge
):
    def refuse(network, container):
        raise EngineError(f"connect {container} to network {network}: refused")

    monkeypatch.setattr(engine, "connect_container", refuse)
    op = services.create_instance(LOCAL, "eve", "demo")
    for _ in range(30):
        controller.pass_once()
    op.refresh_from_db()
    # the status server's "starting" page is up, the web runs, but the create waits for the edge
    assert op.state == OpState.RUNNING
    assert [s["name"] for s in op.steps if s["state"] != "done"] == ["verify"]
    assert op.error == "/health answers 503 through the edge"
    assert "refused" in controller.edge_state.problem
    assert Instance.objects.get(name="eve").state == "creating"

    monkeypatch.undo()
    converge(controller)
    op.refresh_from_db()
    assert op.state == OpState.SUCCEEDED, op.error
    assert edge.probe("eve.localhost", "/health") == 200


def test_routed_needs_the_observed_attachment_once_the_web_runs(controller, engine, running_instance):
    eve = Instance.objects.get(name=running_instance("eve").name)
    assert controller.edge_state.routed(eve, engine.observe("unit"))
    engine.replace_containers("unit-edge")
    assert not controller.edge_state.routed(eve, engine.observe("unit"))  # a scale or restart waits
    controller.pass_once()
    assert controller.edge_state.routed(eve, engine.observe("unit"))


@pytest.mark.parametrize("action", [services.stop, services.delete, services.erase])
def test_the_proxy_is_detached_before_the_web_service_stops(controller, engine, running_instance, run, action):
    """Else the node keeps its copy of the network when the web's last task goes, and once the
    swarm removes the network that copy stays for good (Docker cannot remove it)."""
    running_instance("eve")
    [container] = engine.edge_containers("unit")
    engine.calls.clear()
    op = run(controller, action(LOCAL, "eve"))
    assert op.state == OpState.SUCCEEDED, op.error
    detach = engine.calls.index(f"disconnect_container unit-eve_edge {container}")
    web_calls = [i for i, call in enumerate(engine.calls) if call in ("apply_service unit-eve_web",
                                                                        "remove_service unit-eve_web")]
    assert web_calls and detach < web_calls[0]
    assert proxy_networks(engine) == [{"unit-edge"}]


def test_the_web_service_stops_only_once_the_proxy_is_observed_detached(
    controller, engine, running_instance, monkeypatch, converge
):
    running_instance("eve")

    def refuse(network, container):
        raise EngineError(f"disconnect {container} from network {network}: refused")

    monkeypatch.setattr(engine, "disconnect_container", refuse)
    op = services.stop(LOCAL, "eve")
    for _ in range(10):
        controller.pass_once()
    op.refresh_from_db()
    assert next(s for s in op.steps if s["name"] == "route")["state"] == "running"
    assert engine.services["unit-eve_web"].replicas == 1
    monkeypatch.undo()
    converge(controller)
    op.refresh_from_db()
    assert op.state == OpState.SUCCEEDED, op.error
    assert engine.services["unit-eve_web"].replicas == 0


def test_the_proxy_is_attached_only_once_the_web_runs(controller, engine, running_instance, run):
    """Docker refuses to attach a service's container to a network no task on the node uses yet."""
    running_instance("eve")
    run(controller, services.stop(LOCAL, "eve"))
    engine.replace_containers("unit-edge")
    engine.calls.clear()
    op = run(controller, services.start(LOCAL, "eve"))
    assert op.state == OpState.SUCCEEDED, op.error
    # one attempt, once the web ran: the fake refuses an earlier one as Docker does
    [connect] = [c for c in engine.calls if c.startswith("connect_container")]
    assert connect.startswith("connect_container unit-eve_edge")
    assert proxy_networks(engine) == [{"unit-edge", "unit-eve_edge"}]


@pytest.mark.parametrize("host", ["EVE.localhost", "eve.localhost.", "127.0.0.1", "[::1]", "localhost", "unit-eve_web"])
def test_the_fake_edge_answers_404_for_what_the_guard_refuses(running_instance, edge, host):
    running_instance("eve")
    assert edge.probe(host, "/health") == 404
    assert edge.probe("eve.localhost:8000", "/health") == 200  # the port is not part of the host


@pytest.fixture
def run(converge):
    def run(controller, op):
        converge(controller)
        return Operation.objects.get(pk=op.pk)

    return run


def test_the_edge_client_loads_through_the_socket_that_answers_and_drops_stale_ones(tmp_path):
    """Each edge container has its own admin socket: one that is still going away when its replacement
    has started must not take the new one's socket with it; a socket nobody listens on is removed."""
    import http.server
    import socket as sockets
    import socketserver
    import threading
    import time

    from hafen.edge.client import CaddyEdge

    loaded = []

    class Admin(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            loaded.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    stale = tmp_path / "status-admin-old.sock"
    dead = sockets.socket(sockets.AF_UNIX)
    dead.bind(str(stale))
    dead.close()  # the file stays, nobody listens: a container that was killed
    time.sleep(0.02)
    live = tmp_path / "status-admin.sock"  # as a status server of an older hafen names it
    server = socketserver.UnixStreamServer(str(live), Admin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        edge = CaddyEdge(tmp_path, 18080)
        edge.load("status", {"apps": {}})
        assert loaded == [b'{"apps": {}}']
        assert stale.exists()  # the newest answered: the older one was not even tried
        server.shutdown()
        server.server_close()  # unlinks nothing: as a container killed before it could
        live.touch()
        with pytest.raises(EngineError, match="not up yet"):
            edge.load("status", {"apps": {}})
        assert not stale.exists()
        assert not live.exists()
        with pytest.raises(EngineError, match="no admin socket"):
            edge.load("proxy", {"apps": {}})
    finally:
        server.server_close()
