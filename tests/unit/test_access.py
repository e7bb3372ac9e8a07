"""Organisations, members, locks and the audit trail, through the service layer."""

import pytest
from django.contrib.auth import authenticate

from hafen.access import audit
from hafen.access import services as access
from hafen.access.models import AuditEntry, Membership
from hafen.errors import Conflict, Forbidden, InvalidInput, NotFound
from hafen.instances import services
from hafen.instances.models import Instance


def test_admin_creates_in_their_organisation_by_default(people, controller):
    services.create_instance(people.actor("admin"), "neu", "demo")
    assert Instance.objects.get(name="neu").organisation == people.acme
    with pytest.raises(Forbidden):
        services.create_instance(people.actor("member"), "neu2", "demo")
    with pytest.raises(NotFound):
        services.create_instance(people.actor("outsider"), "neu3", "demo", organisation="acme")
    assert not Instance.objects.filter(name__in=["neu2", "neu3"]).exists()


def test_a_new_member_gets_a_password_that_logs_in(people):
    new = access.add_member(people.actor("admin"), "acme", "dave", "member")
    assert new.password and authenticate(username="dave", password=new.password) is not None
    assert Membership.objects.get(user__username="dave").organisation == people.acme


def test_an_admin_cannot_pull_in_an_existing_account(people):
    with pytest.raises(Conflict, match="taken"):
        access.add_member(people.actor("admin"), "acme", "mallory")
    new = access.add_member(people.actor("operator"), "acme", "mallory")
    assert new.password is None  # an existing account keeps its password


def test_the_last_admin_stays(people):
    with pytest.raises(Conflict, match="last admin"):
        access.remove_member(people.actor("admin"), "acme", "alice")
    with pytest.raises(Conflict, match="last admin"):
        access.change_member(people.actor("admin"), "acme", "alice", role="member")
    access.change_member(people.actor("admin"), "acme", "bob", role="admin")
    access.remove_member(people.actor("admin"), "acme", "alice")


@pytest.mark.parametrize(
    "actions,reason,match",
    [([], "why not", "one or more"), (["fly"], "why not", "not fly"), (["stop"], "x", "reason")],
)
def test_bad_locks_are_refused(people, running_instance, actions, reason, match):
    running_instance("eve", organisation="acme")
    with pytest.raises(InvalidInput, match=match):
        services.lock(people.actor("admin"), "eve", actions, reason)
    assert not Instance.objects.get(name="eve").locks.exists()


def test_every_change_and_refusal_is_audited_with_who_and_where(people, running_instance, controller):
    running_instance("eve", organisation="acme")
    services.stop(people.actor("member", via="ui"), "eve")
    with pytest.raises(Forbidden):
        services.erase(people.actor("member", via="ui"), "eve")
    with pytest.raises(NotFound):
        services.stop(people.actor("outsider"), "eve")
    rows = [(e.actor, e.via, e.source, e.action, e.result, e.organisation_id)
            for e in AuditEntry.objects.filter(instance_name="eve").order_by("id")]
    acme = people.acme.id
    assert rows[-3:] == [
        ("bob", "ui", "127.0.0.1", "stop", "ok", acme),
        ("bob", "ui", "127.0.0.1", "erase", "refused", acme),
        ("mallory", "api", "127.0.0.1", "stop", "refused", None),  # not filed under acme: mallory sees nothing
    ]
    assert AuditEntry.objects.get(action="stop", result="ok").operation_id is not None
    seen_by_member = {e.instance_name for e in audit.visible(people.actor("member"))}
    seen_by_outsider = list(audit.visible(people.actor("outsider")).filter(instance_name="eve"))
    assert "eve" in seen_by_member
    assert [(e.actor, e.result) for e in seen_by_outsider] == [("mallory", "refused")]  # only their own attempt


def test_each_call_writes_one_audit_entry(people, running_instance, controller):
    running_instance("eve", organisation="acme")
    services.scale(people.actor("admin"), "eve", 2)
    with pytest.raises(InvalidInput):
        services.scale(people.actor("admin"), "eve", -1)
    entries = [(e.action, e.result) for e in AuditEntry.objects.filter(action="scale").order_by("id")]
    assert entries == [("scale", "ok"), ("scale", "refused")]


def test_operators_set_and_remove_an_organisations_node_labels_as_on_a_node(people):
    acme = access.set_node_labels(people.actor("operator"), "acme", ["customer=acme", "zone=a"])
    assert acme.node_labels == {"customer": "acme", "zone": "a"}
    access.set_node_labels(people.actor("operator"), "acme", ["zone-", "tier=dedicated"])
    people.acme.refresh_from_db()
    assert people.acme.node_labels == {"customer": "acme", "tier": "dedicated"}
    assert access.describe_organisation(people.acme)["node_labels"] == {"customer": "acme", "tier": "dedicated"}
    entry = AuditEntry.objects.filter(action="label-organisation", result="ok").order_by("id").last()
    assert (entry.actor, entry.organisation_id) == ("olga", people.acme.id)
    assert entry.detail["changes"] == ["zone-", "tier=dedicated"]
    assert entry.detail["before"] == {"customer": "acme", "zone": "a"}
    assert entry.detail["after"] == {"customer": "acme", "tier": "dedicated"}


@pytest.mark.parametrize("changes,match", [
    ([], "at least one KEY=VALUE"),
    (["novalue"], "not KEY=VALUE or KEY-"),
    (["hafen.drain=moving"], "not a label key: 'hafen.drain'"),
    (["=acme"], "not a label key: ''"),
    (["customer=a b"], "not a label value: 'a b'"),
    (["ok=1", "bad key=1"], "not a label key: 'bad key'"),
])
def test_bad_node_labels_of_an_organisation_are_refused_with_one_line_and_change_nothing(people, changes, match):
    access.set_node_labels(people.actor("operator"), "acme", ["customer=acme"])
    with pytest.raises(InvalidInput, match=match) as refused:
        access.set_node_labels(people.actor("operator"), "acme", changes)
    assert "\n" not in str(refused.value)
    people.acme.refresh_from_db()
    assert people.acme.node_labels == {"customer": "acme"}
    assert AuditEntry.objects.filter(action="label-organisation", result="refused").count() == 1


def test_only_operators_set_node_labels_and_outsiders_learn_nothing(people):
    for role in ("admin", "member"):
        with pytest.raises(Forbidden, match="only operators"):
            access.set_node_labels(people.actor(role), "acme", ["customer=acme"])
    with pytest.raises(NotFound):
        access.set_node_labels(people.actor("outsider"), "acme", ["customer=acme"])
    with pytest.raises(NotFound):
        access.set_node_labels(people.actor("operator"), "nosuch", ["customer=acme"])
    people.acme.refresh_from_db()
    assert people.acme.node_labels == {}
    refusals = [(e.actor, e.organisation_id) for e in
                AuditEntry.objects.filter(action="label-organisation", result="refused").order_by("id")]
    assert refusals == [("alice", people.acme.id), ("bob", people.acme.id), ("mallory", None), ("olga", None)]


def test_a_read_token_of_an_operator_does_not_set_node_labels(people):
    from hafen.access.policy import Actor

    reading = Actor(user=people.users["operator"], via="api", source="127.0.0.1", scope="read")
    with pytest.raises(Forbidden, match="read scope"):
        access.set_node_labels(reading, "acme", ["customer=acme"])
    people.acme.refresh_from_db()
    assert people.acme.node_labels == {}


def test_an_organisations_new_instances_go_to_the_nodes_its_labels_name(people, engine, controller, converge):
    engine.add_node("node2", "host2", memory_gib=4, labels={"customer": "acme"})  # the emptier node is host1
    access.set_node_labels(people.actor("operator"), "acme", ["customer=acme"])
    services.create_instance(people.actor("admin"), "neu", "demo")
    services.create_instance(people.actor("outsider"), "other", "demo")
    converge(controller)
    assert Instance.objects.get(name="neu").node_name == "host2"
    assert Instance.objects.get(name="other").node_name == "host1"


def test_a_read_token_of_an_operator_does_not_create_organisations(people):
    from hafen.access.models import Organisation
    from hafen.access.policy import Actor

    reading = Actor(user=people.users["operator"], via="api", source="127.0.0.1", scope="read")
    with pytest.raises(Forbidden, match="read scope"):
        access.create_organisation(reading, "readco")
    assert not Organisation.objects.filter(slug="readco").exists()
