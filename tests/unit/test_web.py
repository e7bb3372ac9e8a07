"""The web UI through Django's test client: sign-in, what each role sees and may do, secrets, CSRF.

Uses the `people` of conftest: olga the operator, alice the admin and bob a
member of acme, carol a member of acme who may reveal credentials, and
mallory, the admin of globex, as the outsider.
"""

import html

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from hafen.access.models import AuditEntry, Organisation
from hafen.config import get_settings
from hafen.instances import services
from hafen.instances.models import Desired, Instance, Lock, Operation, State
from tests.unit.conftest import LOCAL

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world(people, running_instance):
    """`kestrel` belongs to acme and runs; `quokka` belongs to globex and runs."""
    running_instance("kestrel", organisation="acme")
    running_instance("quokka", organisation="globex")
    return people


def client_for(people, role, **kwargs):
    client = Client(**kwargs)
    client.force_login(people.users[role])
    return client


def page(response):
    return response.content.decode()


def messages_of(response):
    """The texts of the messages the page shows."""
    parts = page(response).split('<li class="message ')[1:]
    return [html.unescape(part.split(">", 1)[1].split("</li>")[0]) for part in parts]


# -- signing in -----------------------------------------------------------------------------------------


def test_pages_need_a_login():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login")


def test_an_expired_session_redirects_htmx_polls_to_the_login_page():
    response = Client().get("/rows", **HTMX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login"


def test_login_and_logout_are_audited(people):
    client = Client()
    assert client.get("/login").status_code == 200
    wrong = client.post("/login", {"username": "alice", "password": "wrong password"})
    assert wrong.status_code == 200
    assert "Wrong user name or password" in page(wrong)
    right = client.post("/login", {"username": "alice", "password": "alice" * 4})
    assert right.status_code == 302 and right["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout").status_code == 302
    assert client.get("/").status_code == 302
    entries = [(e.action, e.actor, e.result) for e in AuditEntry.objects.order_by("id") if e.via == "ui"]
    assert entries == [("login", "alice", "refused"), ("login", "alice", "ok"), ("logout", "alice", "ok")]
    assert AuditEntry.objects.get(action="login", result="refused").user == people.users["admin"]


def test_logout_is_a_post():
    assert Client().get("/logout").status_code == 405


def test_login_is_rate_limited(people, monkeypatch):
    monkeypatch.setattr(get_settings(), "login_rate", "3/h")
    client = Client()
    for _ in range(3):
        assert client.post("/login", {"username": "alice", "password": "guess"}).status_code == 200
    limited = client.post("/login", {"username": "alice", "password": "alice" * 4})
    assert limited.status_code == 429
    assert "Too many sign-in attempts" in page(limited)
    assert client.get("/login").status_code == 200  # only attempts count
    assert client.get("/").status_code == 302  # the right password did not get through


# -- the dashboard ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "sees", "hidden"), [
    ("operator", {"kestrel", "quokka"}, set()),
    ("admin", {"kestrel"}, {"quokka", "globex"}),
    ("member", {"kestrel"}, {"quokka", "globex"}),
    ("outsider", {"quokka"}, {"kestrel", "acme", "Acme"}),
])
def test_dashboard_shows_only_what_the_user_may_see(world, role, sees, hidden):
    client = client_for(world, role)
    for url in ("/", "/rows", "/?q=k", "/audit", "/orgs"):
        text = page(client.get(url))
        for name in hidden:
            assert name not in text, (url, name)
    for url in ("/", "/rows"):
        text = page(client.get(url))
        for name in sees:
            assert f'href="/instances/{name}"' in text


def test_dashboard_filters_and_polls_with_the_same_filters(world):
    client = client_for(world, "operator")
    services.stop(LOCAL, "quokka")
    text = page(client.get("/?state=running&organisation=acme"))
    assert 'href="/instances/kestrel"' in text and 'href="/instances/quokka"' not in text
    assert 'hx-get="/rows?state=running&amp;organisation=acme"' in text
    assert 'hx-trigger="every 2s"' in text
    assert 'href="/instances/kestrel"' not in page(client.get("/rows?q=quok"))
    # a filter value the user may not see finds nothing rather than everything
    assert 'href="/instances/' not in page(client_for(world, "admin").get("/rows?organisation=globex"))


def test_dashboard_links_new_instance_only_for_those_who_may_create(world):
    assert 'href="/instances/new"' in page(client_for(world, "admin").get("/"))
    assert 'href="/instances/new"' not in page(client_for(world, "member").get("/"))


def test_dashboard_with_500_instances_pages_and_its_queries_do_not_grow(people):
    """How fast it is, bench/dashboard.py measures; this checks the work does not grow."""
    observed = {"services": {"web": {"replicas": 1, "running": 1, "state": "running", "error": ""}}}
    Instance.objects.bulk_create(
        Instance(name=f"event-{i:04d}", app="demo", version="1.0", domain=f"event-{i:04d}.example.org",
                 organisation=people.acme if i % 2 else people.globex, state=State.RUNNING, observed=observed)
        for i in range(500)
    )
    for role in ("operator", "admin"):
        client = client_for(people, role)
        client.get("/")
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/")
        assert response.status_code == 200
        assert page(response).count('href="/instances/event-') == 100  # one page
        assert "page 1 of" in page(response)
        assert len(queries) <= 10, [q["sql"] for q in queries]
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/rows?page=2").status_code == 200
        assert len(queries) <= 8


# -- the instance page and its actions ---------------------------------------------------------------------


INSTANCE_URLS = ["/instances/kestrel", "/instances/kestrel/status", "/instances/kestrel/logs"]
ACTIONS = [
    ("start", {}), ("stop", {}), ("restart", {}), ("scale", {"replicas": "2"}), ("passwd", {}), ("delete", {}),
    ("erase", {"confirm": "kestrel"}), ("credentials", {}), ("locks", {"actions": ["erase"], "reason": "keep it"}),
]


def test_outsider_gets_404_for_everything_of_the_instance(world):
    client = client_for(world, "outsider")
    lock = Lock.objects.create(instance=Instance.objects.get(name="kestrel"), actions=["erase"], reason="x",
                               created_by="olga")
    operation = Operation.objects.filter(instance_name="kestrel").first()
    before = (Operation.objects.count(), Instance.objects.get(name="kestrel").desired_state)
    for url in [*INSTANCE_URLS, f"/operations/{operation.id}", f"/operations/{operation.id}/progress"]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert "kestrel.localhost" not in page(response)
    hidden, unknown = (client.get(f"/operations/{n}/progress", **HTMX) for n in (operation.id, 99999))
    assert hidden.status_code == unknown.status_code == 404
    assert "kestrel" not in page(hidden)
    for action, data in ACTIONS:
        assert client.post(f"/instances/kestrel/{action}", data).status_code == 404, action
    assert client.post(f"/instances/kestrel/locks/{lock.id}/remove").status_code == 404
    assert client.get("/instances/nosuch").status_code == 404
    assert (Operation.objects.count(), Instance.objects.get(name="kestrel").desired_state) == before
    assert Lock.objects.count() == 1


@pytest.mark.parametrize(("role", "buttons", "absent"), [
    ("operator", {"start", "stop", "restart", "scale", "update", "passwd", "delete", "erase", "reveal", "lock"}, set()),
    ("admin", {"start", "stop", "restart", "scale", "update", "passwd", "delete", "erase", "reveal", "lock"}, set()),
    ("member", {"start", "stop"}, {"restart", "scale", "update", "passwd", "delete", "erase", "reveal", "lock"}),
    ("reader", {"start", "stop", "reveal"}, {"restart", "scale", "erase", "lock"}),
])
def test_instance_page_shows_the_buttons_the_role_allows(world, role, buttons, absent):
    text = page(client_for(world, role).get("/instances/kestrel"))
    for button in buttons:
        assert f'<button name="{button}"' in text, button
    for button in absent:
        assert f'<button name="{button}"' not in text, button
    assert 'hx-trigger="every 2s"' in text


def test_member_may_stop_but_not_erase(world, controller, converge):
    client = client_for(world, "member")
    refused = client.post("/instances/kestrel/erase", {"confirm": "kestrel"}, follow=True)
    assert "your role does not allow erase" in " ".join(messages_of(refused))
    assert Instance.objects.get(name="kestrel").desired_state == Desired.RUNNING
    assert not Operation.objects.filter(kind="erase").exists()
    stopped = client.post("/instances/kestrel/stop")
    operation = Operation.objects.get(kind="stop")
    assert stopped["Location"] == f"/operations/{operation.id}"
    converge(controller)
    assert Instance.objects.get(name="kestrel").state == State.STOPPED


def test_admin_actions_lead_to_the_operation_page(world, controller, converge):
    client = client_for(world, "admin")
    for action, data in [("scale", {"replicas": "2"}), ("restart", {}), ("stop", {}), ("start", {})]:
        response = client.post(f"/instances/kestrel/{action}", data)
        assert response.status_code == 302, action
        operation = Operation.objects.latest("id")
        assert (operation.kind, response["Location"]) == (action, f"/operations/{operation.id}")
        converge(controller)
    assert Instance.objects.get(name="kestrel").replicas == 2
    bad = client.post("/instances/kestrel/scale", {"replicas": "99"}, follow=True)
    assert "replicas must be between 0 and 32" in " ".join(messages_of(bad))


def test_the_dashboard_says_an_update_is_there_and_the_instance_page_queues_it(world, controller, converge, engine):
    from tests.unit.test_updates import SmokeRestic

    engine.job_output = SmokeRestic()  # the backup and smoke jobs' results
    client = client_for(world, "admin")
    assert "2.0 available" in page(client.get("/"))
    response = client.post("/instances/kestrel/update", {"version": "2.0"})
    operation = Operation.objects.get(kind="update")
    assert response["Location"] == f"/operations/{operation.id}" and operation.params["to_version"] == "2.0"
    converge(controller, max_passes=80)
    assert Instance.objects.get(name="kestrel").version == "2.0"
    refused = client.post("/instances/kestrel/update", {"version": "2.0"}, follow=True)
    assert "newest build of Demo 2.0 already" in " ".join(messages_of(refused))


def test_erase_needs_the_typed_name(world, controller, converge):
    client = client_for(world, "operator")
    for typed in ("", "kestre", "quokka"):
        refused = client.post("/instances/kestrel/erase", {"confirm": typed}, follow=True)
        assert "type the name kestrel to erase it" in " ".join(messages_of(refused))
    assert Instance.objects.get(name="kestrel").desired_state == Desired.RUNNING
    response = client.post("/instances/kestrel/erase", {"confirm": "kestrel"})
    assert response["Location"] == f"/operations/{Operation.objects.get(kind='erase').id}"
    polled = page(client.get(response["Location"] + "/progress", **HTMX))
    assert 'hx-trigger="every 1s"' in polled
    converge(controller)
    assert not Instance.objects.filter(name="kestrel").exists()
    assert client.get("/instances/kestrel").status_code == 404
    finished = page(client.get(response["Location"] + "/progress", **HTMX))
    assert "succeeded" in finished and "hx-trigger" not in finished


def test_credentials_only_on_explicit_reveal_and_audited(world):
    password = services.credentials(LOCAL, "kestrel").password
    client = client_for(world, "reader")
    for url in ["/", "/rows", *INSTANCE_URLS, "/audit"]:
        assert password not in page(client.get(url)), url
    before = AuditEntry.objects.filter(action="credentials", actor="carol").count()
    revealed = client.post("/instances/kestrel/credentials", **HTMX)
    assert revealed.status_code == 200
    assert password in page(revealed) and "<html" not in page(revealed)
    assert "no-store" in revealed["Cache-Control"]
    assert AuditEntry.objects.filter(action="credentials", actor="carol", result="ok").count() == before + 1
    without_htmx = client.post("/instances/kestrel/credentials")
    assert password in page(without_htmx) and "<html" in page(without_htmx)


def test_member_without_the_right_cannot_reveal(world):
    password = services.credentials(LOCAL, "kestrel").password
    client = client_for(world, "member")
    refused = client.post("/instances/kestrel/credentials", **HTMX)
    assert password not in page(refused)
    assert "does not allow credentials" in page(refused)
    assert AuditEntry.objects.filter(action="credentials", actor="bob", result="refused").exists()


def test_new_admin_password_is_shown_once(world, controller, converge):
    client = client_for(world, "admin")
    response = client.post("/instances/kestrel/passwd")
    assert response.status_code == 200
    converge(controller)
    password = services.credentials(LOCAL, "kestrel").password
    assert password in page(response)
    assert password not in page(client.get("/instances/kestrel"))


def test_a_lock_refuses_stop_with_its_reason(world):
    client = client_for(world, "admin")
    added = client.post("/instances/kestrel/locks", {"actions": ["stop", "erase"], "reason": "the AGM runs today"},
                        follow=True)
    assert "Lock added." in messages_of(added)
    assert "the AGM runs today" in page(added)
    refused = client.post("/instances/kestrel/stop", follow=True)
    assert refused.redirect_chain[-1][0] == "/instances/kestrel"
    assert any("locked against stop: the AGM runs today" in m for m in messages_of(refused))
    assert Instance.objects.get(name="kestrel").desired_state == Desired.RUNNING
    assert not Operation.objects.filter(kind="stop").exists()
    lock = Lock.objects.get()
    removed = client.post(f"/instances/kestrel/locks/{lock.id}/remove", follow=True)
    assert "Lock removed." in messages_of(removed)
    assert client.post("/instances/kestrel/stop").status_code == 302
    assert Operation.objects.filter(kind="stop").exists()


def test_an_operators_lock_stays_for_the_admin(world):
    services.lock(world.actor("operator"), "kestrel", ["delete"], "contract ends in May")
    client = client_for(world, "admin")
    lock = Lock.objects.get()
    refused = client.post(f"/instances/kestrel/locks/{lock.id}/remove", follow=True)
    assert any("only an operator can lift it" in m for m in messages_of(refused))
    assert Lock.objects.count() == 1


def test_logs_partial_shows_the_last_lines_or_why_not(world, engine):
    engine.logs["unit-kestrel_web"] = [f"line {n}" for n in range(80)]
    client = client_for(world, "member")
    text = page(client.get("/instances/kestrel/logs"))
    assert "line 79" in text and "line 30" in text and "line 29" not in text
    del engine.services["unit-kestrel_web"]
    assert "No log to show" in page(client.get("/instances/kestrel/logs"))


def test_csrf_is_enforced(world):
    client = client_for(world, "operator", enforce_csrf_checks=True)
    assert client.post("/instances/kestrel/stop").status_code == 403
    assert client.post("/logout").status_code == 403
    assert Instance.objects.get(name="kestrel").desired_state == Desired.RUNNING
    text = page(client.get("/instances/kestrel"))
    token = text.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    assert client.post("/instances/kestrel/stop", {"csrfmiddlewaretoken": token}).status_code == 302
    assert '"X-CSRFToken": "' in text  # htmx sends it as a header


# -- creating, operations ------------------------------------------------------------------------------------


def test_create_through_the_form_and_follow_the_operation(world, controller, converge):
    client = client_for(world, "admin")
    form = page(client.get("/instances/new"))
    assert '<option value="acme"' in form and "globex" not in form and "operators' own" not in form
    response = client.post("/instances/new", {"name": "neu", "app": "demo", "version": "", "domain": "",
                                              "size": "small", "organisation": "acme"})
    operation = Operation.objects.get(kind="create", instance_name="neu")
    assert response["Location"] == f"/operations/{operation.id}"
    polling = page(client.get(f"/operations/{operation.id}"))
    assert 'hx-trigger="every 1s"' in polling
    converge(controller)
    done = page(client.get(f"/operations/{operation.id}/progress"))
    assert "succeeded" in done and "hx-trigger" not in done and 'value="100"' in done
    assert Instance.objects.get(name="neu").organisation.slug == "acme"


def test_create_shows_the_service_layers_error_and_creates_nothing(world):
    client = client_for(world, "operator")
    assert "operators&#x27; own" in page(client.get("/instances/new"))
    response = client.post("/instances/new", {"name": "kestrel", "app": "demo", "size": "small", "organisation": ""})
    assert response.status_code == 200
    assert "an instance named &#x27;kestrel&#x27; exists already" in page(response)
    assert Instance.objects.count() == 2


def test_member_cannot_create(world):
    client = client_for(world, "member")
    assert "does not allow creating instances" in page(client.get("/instances/new"))
    client.post("/instances/new", {"name": "neu", "app": "demo", "size": "small", "organisation": "acme"})
    assert not Instance.objects.filter(name="neu").exists()


def test_failed_operation_shows_its_error(world):
    operation = Operation.objects.filter(instance_name="kestrel").first()
    Operation.objects.filter(pk=operation.pk).update(state="failed", error="the web service did not start")
    text = page(client_for(world, "member").get(f"/operations/{operation.id}"))
    assert "the web service did not start" in text and "hx-trigger" not in text


# -- organisations, audit, tokens ----------------------------------------------------------------------------


def test_operator_creates_an_organisation(people):
    client = client_for(people, "operator")
    assert 'name="slug"' in page(client.get("/orgs"))
    response = client.post("/orgs", {"slug": "initech", "name": "Initech"})
    assert response["Location"] == "/orgs/initech"
    assert Organisation.objects.filter(slug="initech").exists()
    bad = client.post("/orgs", {"slug": "Not OK"})
    assert "invalid organisation" in page(bad)
    assert 'name="slug"' not in page(client_for(people, "admin").get("/orgs"))
    client_for(people, "admin").post("/orgs", {"slug": "sneaky"})
    assert not Organisation.objects.filter(slug="sneaky").exists()


def test_admin_manages_members_and_a_new_password_is_shown_once(people):
    client = client_for(people, "admin")
    response = client.post("/orgs/acme/members", {"username": "dave", "role": "member"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    password = page(response).split("<code>")[2].split("</code>")[0]
    assert Client().login(username="dave", password=password)
    org_page = page(client.get("/orgs/acme"))
    assert "dave" in org_page and password not in org_page
    client.post("/orgs/acme/members/dave", {"role": "admin", "can_read_credentials": "on"})
    membership = people.acme.memberships.get(user__username="dave")
    assert (membership.role, membership.can_read_credentials) == ("admin", True)
    client.post("/orgs/acme/members/dave/remove")
    assert not people.acme.memberships.filter(user__username="dave").exists()
    taken = client.post("/orgs/acme/members", {"username": "mallory", "role": "member"}, follow=True)
    assert "is taken" in " ".join(messages_of(taken))


def test_operators_set_an_organisations_node_labels_on_its_page_and_the_list_shows_them(people):
    client = client_for(people, "operator")
    text = page(client.get("/orgs/acme"))
    assert "New instances go to any node." in text
    assert 'action="/orgs/acme/labels"' in text and 'name="changes"' in text
    response = client.post("/orgs/acme/labels", {"changes": "customer=acme zone=a items=x"}, follow=True)
    assert response.redirect_chain == [("/orgs/acme", 302)]
    assert "Node labels of acme changed." in messages_of(response)
    people.acme.refresh_from_db()
    assert people.acme.node_labels == {"customer": "acme", "items": "x", "zone": "a"}
    assert "New instances go only to nodes labelled <code>customer=acme</code> <code>items=x</code> " \
           "<code>zone=a</code>" in page(response)
    client.post("/orgs/acme/labels", {"changes": "zone- items-"})
    listing = page(client.get("/orgs"))
    assert "<code>customer=acme</code>" in listing and "zone=a" not in listing
    assert listing.count("any node") == 1  # globex
    entry = AuditEntry.objects.filter(action="label-organisation", result="ok").order_by("id").last()
    assert (entry.actor, entry.via, entry.detail["changes"]) == ("olga", "ui", ["zone-", "items-"])


@pytest.mark.parametrize("changes,message", [
    ("hafen.drain=moving", "not a label key: 'hafen.drain'"),
    ("novalue", "not KEY=VALUE or KEY-: 'novalue'"),
    ("", "give at least one KEY=VALUE"),
])
def test_bad_node_labels_on_the_page_get_one_line_and_change_nothing(people, changes, message):
    people.acme.node_labels = {"customer": "acme"}
    people.acme.save()
    response = client_for(people, "operator").post("/orgs/acme/labels", {"changes": changes}, follow=True)
    shown = messages_of(response)
    assert len(shown) == 1 and shown[0].startswith(message), shown
    people.acme.refresh_from_db()
    assert people.acme.node_labels == {"customer": "acme"}


def test_only_operators_see_the_label_form_and_may_set_labels(people):
    people.acme.node_labels = {"customer": "acme"}
    people.acme.save()
    for role in ("admin", "member"):
        client = client_for(people, role)
        text = page(client.get("/orgs/acme"))
        assert "<code>customer=acme</code>" in text and 'action="/orgs/acme/labels"' not in text
        response = client.post("/orgs/acme/labels", {"changes": "customer=globex"}, follow=True)
        assert any("only operators" in m for m in messages_of(response)), role
    assert "Placement" not in page(client_for(people, "outsider").get("/orgs/globex"))  # no labels, no form
    assert client_for(people, "outsider").post("/orgs/acme/labels", {"changes": "customer=x"}).status_code == 404
    people.acme.refresh_from_db()
    assert people.acme.node_labels == {"customer": "acme"}


def test_the_label_form_needs_its_csrf_token(people):
    client = client_for(people, "operator", enforce_csrf_checks=True)
    assert client.post("/orgs/acme/labels", {"changes": "customer=acme"}).status_code == 403
    text = page(client.get("/orgs/acme"))
    token = text.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    response = client.post("/orgs/acme/labels", {"changes": "customer=acme", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    people.acme.refresh_from_db()
    assert people.acme.node_labels == {"customer": "acme"}


def test_members_see_but_do_not_manage_and_outsiders_get_404(people):
    member = client_for(people, "member")
    text = page(member.get("/orgs/acme"))
    assert "alice" in text and 'name="username"' not in text
    member.post("/orgs/acme/members", {"username": "eve2", "role": "member"})
    member.post("/orgs/acme/members/alice/remove")
    assert people.acme.memberships.count() == 3
    outsider = client_for(people, "outsider")
    assert outsider.get("/orgs/acme").status_code == 404
    assert outsider.post("/orgs/acme/members", {"username": "x1", "role": "member"}).status_code == 404
    assert outsider.post("/orgs/acme/members/bob/remove").status_code == 404


def test_audit_is_filtered_and_scoped(world):
    services.stop(world.actor("operator", via="ui"), "quokka")
    client = client_for(world, "operator")
    text = page(client.get("/audit?instance=quokka&action=stop&result=ok"))
    assert "olga" in text and ">stop<" in text and ">kestrel<" not in text
    assert "quokka" not in page(client_for(world, "admin").get("/audit"))
    assert "No entries" in page(client_for(world, "admin").get("/audit?organisation=globex"))


def test_tokens_are_shown_once_and_revoked(people):
    client = client_for(people, "member")
    response = client.post("/tokens", {"name": "laptop", "scope": "read"})
    token = page(response).split("<code>")[1].split("</code>")[0]
    assert token.startswith("hfn_")
    listing = page(client.get("/tokens"))
    assert "laptop" in listing and token not in listing
    record = people.users["member"].api_tokens.get(name="laptop")
    client.post(f"/tokens/{record.id}/revoke")
    record.refresh_from_db()
    assert record.revoked_at is not None
    other = people.users["admin"].api_tokens.first()
    assert client.post(f"/tokens/{other.id}/revoke").status_code == 404


def test_static_css_and_htmx_are_served(people):
    client = client_for(people, "member")
    text = page(client.get("/"))
    assert "/static/web/hafen.css" in text and "/static/django_htmx/htmx-2.min.js" in text
    assert client.get("/static/web/hafen.css").status_code == 200
    assert client.get("/static/django_htmx/htmx-2.min.js").status_code == 200
