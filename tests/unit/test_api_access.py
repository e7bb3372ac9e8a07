"""The authorisation matrix of the REST API: every endpoint against every role.

An operator may do everything; an admin of the owning organisation everything
to its instances; a member may see, start, stop and read logs; a user of
another organisation gets 404 for anything of the owning one, and learns
nothing of it. A read token (here the admin's) may look but neither act nor
reveal credentials.
"""

import pytest
from django.test import Client

from hafen.access.models import AuditEntry
from hafen.instances.models import Instance, Lock, Operation

OK, NOPE, HIDDEN = "ok", 403, 404
ROLES = ("operator", "admin", "member", "outsider", "read")

# (method, path, body, {role: expected}); "ok" is any 2xx.
MATRIX = [
    ("get", "/instances/eve", None, ("ok", "ok", "ok", 404, "ok")),
    ("get", "/instances/eve/operations", None, ("ok", "ok", "ok", 404, "ok")),
    ("get", "/instances/eve/logs", None, ("ok", "ok", "ok", 404, "ok")),
    ("get", "/instances/eve/locks", None, ("ok", "ok", "ok", 404, "ok")),
    ("get", "/instances/eve/credentials", None, ("ok", "ok", 403, 404, 403)),
    ("post", "/instances/eve/start", None, ("ok", "ok", "ok", 404, 403)),
    ("post", "/instances/eve/stop", None, ("ok", "ok", "ok", 404, 403)),
    ("post", "/instances/eve/restart", None, ("ok", "ok", 403, 404, 403)),
    ("post", "/instances/eve/scale", {"replicas": 2}, ("ok", "ok", 403, 404, 403)),
    ("post", "/instances/eve/password", None, ("ok", "ok", 403, 404, 403)),
    ("post", "/instances/eve/delete", None, ("ok", "ok", 403, 404, 403)),
    ("post", "/instances/eve/erase", {"confirm": "eve"}, ("ok", "ok", 403, 404, 403)),
    ("post", "/instances/eve/locks", {"actions": ["erase"], "reason": "event running"}, ("ok", "ok", 403, 404, 403)),
    ("delete", "/instances/eve/locks/{lock}", None, ("ok", "ok", 403, 404, 403)),
    ("get", "/operations/{operation}", None, ("ok", "ok", "ok", 404, "ok")),
    ("post", "/instances", {"name": "neu", "app": "demo", "organisation": "acme"}, ("ok", "ok", 403, 404, 403)),
    ("get", "/organisations/acme", None, ("ok", "ok", "ok", 404, "ok")),
    ("get", "/organisations/acme/members", None, ("ok", "ok", "ok", 404, "ok")),
    ("post", "/organisations/acme/members", {"username": "dave"}, ("ok", "ok", 403, 404, 403)),
    ("patch", "/organisations/acme/members/bob", {"role": "admin"}, ("ok", "ok", 403, 404, 403)),
    ("delete", "/organisations/acme/members/bob", None, ("ok", "ok", 403, 404, 403)),
    ("post", "/organisations", {"slug": "initech"}, ("ok", 403, 403, 403, 403)),
    ("post", "/organisations/acme/labels", {"changes": ["customer=acme"]}, ("ok", 403, 403, 404, 403)),
]


@pytest.fixture
def world(people, running_instance):
    """`eve` belongs to acme and runs; it carries one lock on scale (set by its admin)."""
    running_instance("eve", organisation="acme")
    Lock.objects.create(instance=Instance.objects.get(name="eve"), actions=["update"], reason="maintenance",
                        created_by="alice")
    return people


def _call(people, role, method, path, body):
    client = Client()
    instance = Instance.objects.get(name="eve")
    path = path.format(lock=instance.locks.first().id, operation=Operation.objects.filter(instance=instance).first().id)
    kwargs = {"content_type": "application/json", **people.headers(role)}
    if body is not None:
        kwargs["data"] = body
    return getattr(client, method)("/api/v1" + path, **kwargs)


@pytest.mark.parametrize("role_index,role", list(enumerate(ROLES)))
@pytest.mark.parametrize("method,path,body,expected", MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_matrix(world, controller, role_index, role, method, path, body, expected):
    controller.heartbeat()
    before_ops = Operation.objects.count()
    response = _call(world, role, method, path, body)
    want = expected[role_index]
    if want == "ok":
        assert 200 <= response.status_code < 300, response.content
        return
    assert response.status_code == want, response.content
    assert set(response.json()) == {"error"}
    assert Operation.objects.count() == before_ops  # a refusal changes nothing
    if want == 404:
        text = response.content.decode()
        assert "Acme" not in text and "eve.localhost" not in text


def test_outsider_lists_and_audit_show_nothing_of_another_organisation(world, controller):
    client = Client()
    _call(world, "admin", "get", "/instances/eve/credentials", None)
    listing = client.get("/api/v1/instances", **world.headers("outsider")).json()
    assert listing == {"count": 0, "items": []}
    assert client.get("/api/v1/instances?q=eve", **world.headers("member")).json()["count"] == 1
    entries = client.get("/api/v1/audit", **world.headers("outsider")).json()["items"]
    assert all(e["instance"] != "eve" and e["organisation"] != "acme" for e in entries)
    assert [o["slug"] for o in client.get("/api/v1/organisations", **world.headers("outsider")).json()] == ["globex"]


def test_member_with_the_credentials_permission_may_reveal_them(world):
    response = Client().get("/api/v1/instances/eve/credentials", **world.headers("reader"))
    assert response.status_code == 200
    assert response.json()["username"] == "admin"
    entry = AuditEntry.objects.filter(action="credentials").first()
    assert (entry.actor, entry.result, entry.instance_name, entry.via) == ("carol", "ok", "eve", "api")


def test_read_token_may_read_but_not_act(world, controller):
    client = Client()
    headers = world.headers("read")
    assert client.get("/api/v1/instances/eve", **headers).status_code == 200
    response = client.post("/api/v1/instances/eve/stop", **headers)
    assert response.status_code == 403
    assert "read scope" in response.json()["error"]["message"]
    assert client.post("/api/v1/tokens", {"name": "x", "scope": "write"}, content_type="application/json",
                       **headers).status_code == 403


def test_read_token_may_not_reveal_credentials(world):
    """Revealing the admin password is a write-level act: a read token of an admin is refused, and audited."""
    client = Client()
    headers = world.headers("read")
    response = client.get("/api/v1/instances/eve/credentials", **headers)
    assert response.status_code == 403
    assert "read scope" in response.json()["error"]["message"]
    assert "password" not in response.json()
    entry = AuditEntry.objects.filter(action="credentials").first()
    assert (entry.actor, entry.result, entry.via) == ("alice", "refused", "api")
    allowed = client.get("/api/v1/instances/eve", **headers).json()["allowed"]
    assert "credentials" not in allowed and "view" in allowed
    assert client.get("/api/v1/instances/eve/credentials", **world.headers("admin")).status_code == 200


def test_no_secret_in_list_or_detail(world):
    client = Client()
    instance = Instance.objects.get(name="eve")
    from hafen import crypto

    secrets = [crypto.decrypt(s.ciphertext) for s in instance.secrets.all()]
    for path in ("/api/v1/instances", "/api/v1/instances/eve", "/api/v1/audit", "/api/v1/instances/eve/operations"):
        body = client.get(path, **world.headers("operator")).content.decode()
        assert not [s for s in secrets if s in body], path


def test_locked_action_is_refused_with_its_reason_everywhere(world, controller):
    from hafen.errors import Locked
    from hafen.instances import services

    client = Client()
    lock = client.post("/api/v1/instances/eve/locks", {"actions": ["stop", "erase"], "reason": "AGM on Saturday"},
                       content_type="application/json", **world.headers("admin")).json()
    for role in ("operator", "admin", "member"):
        response = client.post("/api/v1/instances/eve/stop", **world.headers(role))
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "locked"
        assert "AGM on Saturday" in response.json()["error"]["message"]
    with pytest.raises(Locked, match="AGM on Saturday"):
        services.erase(world.actor("operator", via="cli"), "eve")
    assert Instance.objects.get(name="eve").desired_state == "running"
    refused = AuditEntry.objects.filter(action="stop", result="refused")
    assert refused.count() == 3
    client.delete(f"/api/v1/instances/eve/locks/{lock['id']}", **world.headers("admin"))
    assert client.post("/api/v1/instances/eve/stop", **world.headers("member")).status_code == 202


def test_an_operators_lock_is_lifted_only_by_an_operator(world):
    client = Client()
    lock = client.post("/api/v1/instances/eve/locks", {"actions": ["delete"], "reason": "invoice unpaid"},
                       content_type="application/json", **world.headers("operator")).json()
    response = client.delete(f"/api/v1/instances/eve/locks/{lock['id']}", **world.headers("admin"))
    assert response.status_code == 403
    assert client.delete(f"/api/v1/instances/eve/locks/{lock['id']}", **world.headers("operator")).status_code == 204


def test_tokens_are_shown_once_stored_hashed_and_revocable(world):
    client = Client()
    created = client.post("/api/v1/tokens", {"name": "ci", "scope": "read"}, content_type="application/json",
                          **world.headers("member")).json()
    token = created["token"]
    from hafen.access.models import ApiToken

    assert not ApiToken.objects.filter(digest=token).exists()
    assert all("token" not in t for t in client.get("/api/v1/tokens", **world.headers("member")).json())
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert client.get("/api/v1/me", **headers).json()["username"] == "bob"
    assert client.delete(f"/api/v1/tokens/{created['id']}", **world.headers("member")).status_code == 204
    assert client.get("/api/v1/me", **headers).status_code == 401
    # one user cannot revoke another's token
    other = world.tokens["admin"]
    other_id = ApiToken.objects.get(prefix=other[:10]).id
    assert client.delete(f"/api/v1/tokens/{other_id}", **world.headers("member")).status_code == 404


def test_errors_have_one_shape(world):
    client = Client()
    cases = [
        client.get("/api/v1/instances"),
        client.get("/api/v1/instances", HTTP_AUTHORIZATION="Bearer nope"),
        client.post("/api/v1/instances", "not json", content_type="application/json", **world.headers("operator")),
        client.post("/api/v1/instances", {"name": "Bad Name", "app": "demo"}, content_type="application/json",
                    **world.headers("operator")),
        client.get("/api/v1/instances?per_page=0", **world.headers("operator")),
        client.post("/api/v1/instances/eve/erase", {"confirm": "eva"}, content_type="application/json",
                    **world.headers("operator")),
    ]
    assert [r.status_code for r in cases] == [401, 401, 400, 400, 400, 400]
    for response in cases:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body


def test_session_calls_need_csrf(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["admin"])
    assert client.get("/api/v1/instances").status_code == 200
    assert client.post("/api/v1/instances/eve/stop").status_code in (401, 403)
    assert Instance.objects.get(name="eve").desired_state == "running"


def test_pagination_and_filters(world, running_instance):
    for name in ("ann", "ben", "cid"):
        running_instance(name, organisation="acme")
    client = Client()
    page = client.get("/api/v1/instances?per_page=2&page=2", **world.headers("admin")).json()
    assert page["count"] == 4
    assert [i["name"] for i in page["items"]] == ["cid", "eve"]
    assert client.get("/api/v1/instances?q=be", **world.headers("admin")).json()["count"] == 1
    assert client.get("/api/v1/instances?state=stopped", **world.headers("admin")).json()["count"] == 0
    assert client.get("/api/v1/instances?organisation=globex", **world.headers("operator")).json()["count"] == 0


def test_the_operation_of_an_erase_stays_visible_to_its_organisation(world, controller, converge):
    client = Client()
    op = client.post("/api/v1/instances/eve/erase", {"confirm": "eve"}, content_type="application/json",
                     **world.headers("admin")).json()
    converge(controller)
    assert not Instance.objects.filter(name="eve").exists()
    for role, status in (("operator", 200), ("admin", 200), ("member", 200), ("outsider", 404)):
        response = client.get(f"/api/v1/operations/{op['id']}", **world.headers(role))
        assert response.status_code == status, role
    assert client.get(f"/api/v1/operations/{op['id']}", **world.headers("admin")).json()["state"] == "succeeded"


def test_reserved_names_are_refused(world):
    response = Client().post("/api/v1/instances", {"name": "new", "app": "demo"}, content_type="application/json",
                             **world.headers("operator"))
    assert response.status_code == 400
    assert "reserved" in response.json()["error"]["message"]


def test_organisations_show_their_node_labels_and_operators_change_them(world):
    client = Client()
    post = {"content_type": "application/json", **world.headers("operator")}
    assert client.get("/api/v1/organisations/acme", **world.headers("member")).json()["node_labels"] == {}
    changed = client.post("/api/v1/organisations/acme/labels", {"changes": ["customer=acme", "zone=a"]}, **post)
    assert changed.status_code == 200
    assert changed.json()["node_labels"] == {"customer": "acme", "zone": "a"}
    changed = client.post("/api/v1/organisations/acme/labels", {"changes": ["zone-"]}, **post)
    assert changed.json()["node_labels"] == {"customer": "acme"}
    shown = client.get("/api/v1/organisations/acme", **world.headers("admin")).json()
    assert shown["node_labels"] == {"customer": "acme"}
    organisations = client.get("/api/v1/organisations", **world.headers("operator")).json()
    listed = {o["slug"]: o["node_labels"] for o in organisations}
    assert listed == {"acme": {"customer": "acme"}, "globex": {}}
    entry = AuditEntry.objects.get(action="label-organisation", result="ok", detail__changes=["zone-"])
    assert (entry.actor, entry.via) == ("olga", "api")


@pytest.mark.parametrize("body,message", [
    ({"changes": ["hafen.drain=moving"]}, "not a label key: 'hafen.drain'"),
    ({"changes": ["novalue"]}, "not KEY=VALUE or KEY-: 'novalue'"),
    ({"changes": ["customer=a b"]}, "not a label value: 'a b'"),
    ({"changes": []}, "changes: "),
    ({"changes": "customer=acme"}, "changes: "),
    ({}, "changes: "),
])
def test_bad_node_labels_are_a_400_with_one_message_and_change_nothing(world, body, message):
    answer = Client().post("/api/v1/organisations/acme/labels", body, content_type="application/json",
                           **world.headers("operator"))
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["code"] == "invalid"
    assert answer.json()["error"]["message"].startswith(message)
    world.acme.refresh_from_db()
    assert world.acme.node_labels == {}


def test_non_operators_are_refused_node_labels_with_a_json_403(world):
    for role, status, message in (("admin", 403, "only operators"), ("member", 403, "only operators"),
                                  ("read", 403, "only operators"), ("outsider", 404, "no organisation")):
        answer = Client().post("/api/v1/organisations/acme/labels", {"changes": ["customer=acme"]},
                               content_type="application/json", **world.headers(role))
        assert answer.status_code == status, (role, answer.content)
        assert answer.json()["error"]["message"].startswith(message), role
    world.acme.refresh_from_db()
    assert world.acme.node_labels == {}
