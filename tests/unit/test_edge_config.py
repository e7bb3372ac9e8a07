import pytest

from hafen.controller.edge import route_for
from hafen.edge.config import Route, build, digest
from hafen.instances.models import Desired, Instance


def routes_of(config, server="http"):
    return config["apps"]["http"]["servers"][server]["routes"]


def route_by_host(config, domain):
    matches = [r for r in routes_of(config) if domain in r.get("match", [{}])[0].get("host", [])]
    assert len(matches) == 1, matches
    return matches[0]


def policies_of(config):
    return config.get("apps", {}).get("tls", {}).get("automation", {}).get("policies", [])


def test_proxied_route_uses_dynamic_upstreams_of_the_web_service():
    config = build([Route("ev.localhost", "ev", "proxy", "unit-ev_web:8000")])
    route = route_by_host(config, "ev.localhost")
    assert route["terminal"] is True
    [handler] = route["handle"]
    assert handler["handler"] == "reverse_proxy"
    assert handler["dynamic_upstreams"]["source"] == "a"
    assert handler["dynamic_upstreams"]["name"] == "unit-ev_web"
    assert handler["dynamic_upstreams"]["port"] == "8000"
    assert "upstreams" not in handler  # no static upstream that would pin one task's address


def test_http_and_https_servers_share_the_routes():
    config = build([Route("ev.localhost", "ev", "proxy", "unit-ev_web:8000")])
    assert routes_of(config, "http") == routes_of(config, "https")


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


def test_last_route_is_a_catch_all_404():
    proxied = Route("a.localhost", "a", "proxy", "unit-a_web:8000")
    config = build([Route("b.localhost", "b", "stopped"), proxied])
    routes = routes_of(config)
    assert len(routes) == 3
    last = routes[-1]
    assert "match" not in last
    assert last["handle"][0]["status_code"] == 404
    # every other route matches exactly one host, sorted by domain
    assert [r["match"][0]["host"] for r in routes[:-1]] == [["a.localhost"], ["b.localhost"]]


def test_empty_configuration_has_only_the_404_and_no_tls_policies():
    config = build([])
    assert len(routes_of(config)) == 1
    assert routes_of(config)[0]["handle"][0]["status_code"] == 404
    assert policies_of(config) == []


def test_localhost_domains_get_the_internal_issuer_even_with_an_acme_email():
    config = build([Route("ev.localhost", "ev", "proxy", "unit-ev_web:8000")], acme_email="ops@example.org")
    assert policies_of(config) == [{"subjects": ["ev.localhost"], "issuers": [{"module": "internal"}]}]


def test_acme_only_for_public_domains_and_only_with_an_email():
    routes = [
        Route("ev.example.org", "ev", "proxy", "unit-ev_web:8000"),
        Route("local.localhost", "local", "stopped"),
        Route("lab.test", "lab", "stopped"),
    ]
    with_email = policies_of(build(routes, acme_email="ops@example.org"))
    acme = {"subjects": ["ev.example.org"], "issuers": [{"module": "acme", "email": "ops@example.org"}]}
    assert acme in with_email
    internal = next(p for p in with_email if p["issuers"] == [{"module": "internal"}])
    assert sorted(internal["subjects"]) == ["lab.test", "local.localhost"]

    without_email = policies_of(build(routes))
    assert len(without_email) == 1
    assert without_email[0]["issuers"] == [{"module": "internal"}]
    assert sorted(without_email[0]["subjects"]) == ["ev.example.org", "lab.test", "local.localhost"]
    assert "acme" not in str(without_email)


def test_digest_is_stable_and_independent_of_route_order():
    a = Route("a.localhost", "a", "proxy", "unit-a_web:8000")
    b = Route("b.localhost", "b", "stopped")
    assert digest(build([a, b])) == digest(build([a, b]))
    assert digest(build([a, b])) == digest(build([b, a]))


@pytest.mark.parametrize(
    "changed",
    [
        [Route("a.localhost", "a", "stopped")],
        [Route("a.localhost", "a", "proxy", "unit-a_web:9000")],
        [Route("a.localhost", "a", "proxy", "unit-a_web:8000"), Route("b.localhost", "b", "starting")],
        [],
    ],
)
def test_digest_changes_when_routes_change(changed):
    base = digest(build([Route("a.localhost", "a", "proxy", "unit-a_web:8000")]))
    assert digest(build(changed)) != base


def test_digest_changes_with_the_acme_email():
    routes = [Route("ev.example.org", "ev", "proxy", "unit-ev_web:8000")]
    assert digest(build(routes)) != digest(build(routes, acme_email="ops@example.org"))


# -- route_for: the route an instance should have -------------------------------------------------


def instance(desired, web_running=None, app="demo"):
    observed = {} if web_running is None else {"services": {"web": {"replicas": 1, "running": web_running}}}
    return Instance(
        name="ev", app=app, version="1.0", domain="ev.localhost", desired_state=desired, observed=observed
    )


def test_route_for_running_instance_with_running_web_proxies_to_the_web_service():
    route = route_for(instance(Desired.RUNNING, web_running=2), "unit")
    assert route == Route("ev.localhost", "ev", "proxy", "unit-ev_web:8000")


@pytest.mark.parametrize("web_running", [None, 0])
def test_route_for_running_instance_without_running_web_is_starting(web_running):
    assert route_for(instance(Desired.RUNNING, web_running=web_running), "unit") == Route(
        "ev.localhost", "ev", "starting"
    )


@pytest.mark.parametrize("web_running", [None, 0, 1])
def test_route_for_stopped_instance_is_stopped_whatever_runs(web_running):
    assert route_for(instance(Desired.STOPPED, web_running=web_running), "unit") == Route(
        "ev.localhost", "ev", "stopped"
    )


@pytest.mark.parametrize("desired", [Desired.DELETED, Desired.ERASED])
def test_route_for_deleted_or_erased_instance_is_none(desired):
    assert route_for(instance(desired, web_running=1), "unit") is None
