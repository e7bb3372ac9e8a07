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
