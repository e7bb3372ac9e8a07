"""The mail relay: its configuration from the settings, the instances' credentials and the relay's service
(fake engine); the real postfix is in tests/integration/test_mail_demo.py."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile

import pytest

from hafen import crypto
from hafen.controller.mail import MailReconciler
from hafen.errors import InvalidInput
from hafen.instances.models import Instance, InstanceSecret
from hafen.mail import relay
from hafen.mail.smarthost import parse
from tests.unit.conftest import converge

ACCOUNTS = [relay.Account("beta", 7, "pw-beta"), relay.Account("alpha", 3, "pw-alpha")]
RATE = relay.parse_rate("100/h")


def _conf(lines: str) -> dict[str, str]:
    """main.cf as a dict (the last value of a name counts, as in postfix)."""
    out = {}
    for line in lines.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


@pytest.mark.parametrize("url, level, wrapper", [
    ("smtp://u:p@mx.example.org:587", "verify", False),
    ("smtp://u:p@mx.example.org:587?tls=encrypt", "encrypt", False),
    ("smtp://mx.example.org", "may", False),
    ("smtp://mx.example.org?tls=none", "none", False),
    ("smtps://u:p@mx.example.org", "verify", True),
])
def test_the_smarthosts_tls_level_becomes_postfixs(url, level, wrapper):
    main = _conf(relay.main_cf(parse(url), "example.org", "relay.example.org"))
    assert main["smtp_tls_security_level"] == level
    assert (main.get("smtp_tls_wrappermode") == "yes") is wrapper
    host = parse(url)
    assert main["relayhost"] == f"[mx.example.org]:{host.port}"  # type: ignore[union-attr]


def test_the_smarthosts_credentials_are_in_a_map_of_their_own_not_in_main_cf():
    host = parse("smtp://relay%40example.org:s3cr%3At@mx.example.org:587")
    main = relay.main_cf(host, "example.org", "r")
    assert "s3cr" not in main and _conf(main)["smtp_sasl_auth_enable"] == "yes"
    assert relay.smarthost_passwd(host) == "[mx.example.org]:587 relay@example.org:s3cr:t\n"
    assert relay.smarthost_passwd(parse("smtp://mx.example.org")) == ""
    assert _conf(relay.main_cf(parse("smtp://mx.example.org"), "example.org", "r"))["smtp_sasl_auth_enable"] == "no"


def test_without_a_smarthost_every_recipient_is_refused_with_the_reason():
    main = _conf(relay.main_cf(None, "example.org", "r"))
    assert main["relayhost"] == ""
    assert "550 5.7.1" in main["smtpd_recipient_restrictions"]
    assert "HAFEN_SMTP_URL" in main["smtpd_recipient_restrictions"]


def test_only_authenticated_clients_may_relay_and_nothing_is_delivered_locally():
    main = _conf(relay.main_cf(parse("smtp://mx.example.org"), "example.org", "r"))
    assert main["smtpd_relay_restrictions"] == "permit_sasl_authenticated, reject_unauth_destination"
    assert main["mydestination"] == "" and main["mynetworks"] == "127.0.0.0/8"
    assert main["smtpd_sasl_type"] == "dovecot"


def test_each_instances_login_picks_its_own_rewrite_to_its_own_address():
    access = relay.sasl_access(ACCOUNTS)
    assert access == ("alpha FILTER reinject:[127.0.0.1]:20003\n"
                      "beta FILTER reinject:[127.0.0.1]:20007\n")
    master = relay.master_cf(ACCOUNTS, "mail.example.org")
    block = master.split("# alpha\n")[1].split("# beta\n")[0]
    assert block.startswith("127.0.0.1:20003 inet")
    assert "-o cleanup_service_name=cleanup-3" in block
    assert "cleanup-3 unix" in block
    assert "-o sender_canonical_maps=static:alpha@mail.example.org" in block
    assert "-o sender_canonical_classes=envelope_sender,header_sender" in block
    # the header too: the re-injection's client counts as local, whatever address XFORWARD names
    assert "-o local_header_rewrite_clients=static:all" in block
    assert "static:beta@mail.example.org" in master.split("# beta\n")[1]


def test_the_relay_knows_hashes_of_the_instances_passwords_never_the_passwords():
    users = relay.users(ACCOUNTS)
    assert "pw-alpha" not in users and "pw-beta" not in users
    line = users.splitlines()[0]
    name, _, hashed = line.partition(":")
    assert name == "alpha"
    assert hashed == "{SHA512}" + base64.b64encode(hashlib.sha512(b"pw-alpha").digest()).decode()
    assert "passwd-file" in relay.dovecot_conf()


@pytest.mark.parametrize("text, count, seconds", [("100/h", 100, 3600), ("5/m", 5, 60), (" 2 / s", 2, 1),
                                                  ("1000/d", 1000, 86400)])
def test_the_rate_limit_is_read_from_the_setting(text, count, seconds):
    rate = relay.parse_rate(text)
    assert (rate.count, rate.seconds) == (count, seconds)
    rule = relay.postfwd_cf(rate)
    assert f"rate(sasl_username/{count}/{seconds}/450 4.7.1 " in rule


@pytest.mark.parametrize("text", ["", "100", "0/h", "ten/h", "5/w", "-1/m"])
def test_a_bad_rate_is_refused_naming_the_setting(text):
    with pytest.raises(InvalidInput, match="HAFEN_MAIL_RATE"):
        relay.parse_rate(text)


def test_the_instances_domain_comes_from_mail_from():
    assert relay.mail_domain("alerts@Mail.Example.org") == "mail.example.org"
    assert relay.sender("agm", "mail.example.org") == "agm@mail.example.org"
    with pytest.raises(InvalidInput, match="HAFEN_MAIL_FROM"):
        relay.mail_domain("nobody@")


def test_the_archive_is_the_same_for_the_same_files():
    files = relay.files(parse("smtp://u:p@mx.example.org:587"), ACCOUNTS, "example.org", RATE, "r.example.org")
    first, second = relay.archive(files), relay.archive(dict(reversed(list(files.items()))))
    assert first == second and relay.digest(first) == relay.digest(second)
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        assert sorted(tar.getnames()) == sorted(files)
        assert {m.mtime for m in tar.getmembers()} == {0}


# -- the controller's part ------------------------------------------------------------------------------------


def _relay_conf(engine) -> dict[str, str]:
    relay_spec = engine.services["unit-mail"]
    secret = relay_spec.secrets[0]
    assert secret.target == "mail.tar"
    with tarfile.open(fileobj=io.BytesIO(engine.secrets[secret.name].data)) as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_an_instances_web_reaches_the_relay_on_its_own_network_with_its_own_credentials(
        controller, engine, running_instance):
    running_instance("aaa")
    running_instance("bbb")
    web = engine.services["unit-aaa_web"]
    assert [n.name for n in web.networks] == ["unit-aaa_internal", "unit-aaa_edge", "unit-aaa_mail"]
    assert web.env["EMAIL_HOST"] == "mail" and web.env["EMAIL_HOST_USER"] == "aaa"
    assert web.env["DEFAULT_FROM_EMAIL"] == "aaa@localhost"
    assert any(s.target == "smtp_password" for s in web.secrets)
    assert not any("mail" in n.name for n in engine.services["unit-aaa_db"].networks)
    relay_spec = engine.services["unit-mail"]
    networks = {n.name: n.aliases for n in relay_spec.networks}
    assert networks == {"unit-mail-out": (), "unit-aaa_mail": ("mail",), "unit-bbb_mail": ("mail",)}
    assert engine.networks["unit-aaa_mail"].internal and not engine.networks["unit-mail-out"].internal
    assert relay_spec.memory_bytes and relay_spec.constraints == ["node.id == node1"]
    assert relay_spec.exclusive  # one postfix on the queue at a time: an update stops the old one first
    password = crypto.decrypt(InstanceSecret.objects.get(instance__name="aaa", name="smtp_password").ciphertext)
    conf = _relay_conf(engine)
    assert "aaa:{SHA512}" in conf["users"] and password not in str(conf) and password not in str(relay_spec)
    docker_secret = next(s for s in web.secrets if s.target == "smtp_password")
    assert engine.secrets[docker_secret.name].data == password.encode()


def test_an_erased_instance_leaves_the_relay_and_its_network_goes(controller, engine, running_instance):
    from hafen.instances import services
    from tests.unit.conftest import LOCAL

    running_instance("aaa")
    running_instance("bbb")
    services.erase(LOCAL, "aaa")
    converge(controller)
    converge(controller)
    assert {n.name for n in engine.services["unit-mail"].networks} == {"unit-mail-out", "unit-bbb_mail"}
    assert "unit-aaa_mail" not in engine.networks
    assert "aaa:" not in _relay_conf(engine)["users"]
    assert len([s for s in engine.secrets if s.startswith("unit-mail-conf-")]) == 1  # the old ones pruned


def test_an_instance_made_before_the_relay_gets_its_credentials(controller, engine, running_instance):
    instance = running_instance("aaa")
    InstanceSecret.objects.filter(instance=instance, name="smtp_password").delete()
    for name in [s for s in engine.secrets if "smtp_password" in s]:
        engine.secrets.pop(name)
    controller.mail_state.reconcile(engine.observe("unit"))
    row = InstanceSecret.objects.get(instance=instance, name="smtp_password")
    assert len(crypto.decrypt(row.ciphertext)) == 32
    assert f"unit-aaa_smtp_password_v{row.version}" in engine.secrets


def test_the_relays_configuration_follows_the_settings(controller, engine, settings, monkeypatch, running_instance):
    running_instance("aaa")
    first = engine.services["unit-mail"].secrets[0].name
    monkeypatch.setattr(settings, "smtp_url", "smtp://u:pw@mx.example.org:587?tls=encrypt")
    monkeypatch.setattr(settings, "mail_rate", "5/m")
    controller.mail_state = MailReconciler(engine, settings)
    converge(controller)
    conf = _relay_conf(engine)
    assert engine.services["unit-mail"].secrets[0].name != first
    assert "relayhost = [mx.example.org]:587" in conf["main.cf"]
    assert "rate(sasl_username/5/60/" in conf["postfwd.cf"]
    assert conf["smarthost_passwd"] == "[mx.example.org]:587 u:pw\n"


def test_bad_mail_settings_stop_the_controller_with_one_line(engine, settings, monkeypatch):
    monkeypatch.setattr(settings, "smtp_url", "http://mx.example.org")
    with pytest.raises(InvalidInput, match="HAFEN_SMTP_URL"):
        MailReconciler(engine, settings)
    monkeypatch.setattr(settings, "smtp_url", "")
    monkeypatch.setattr(settings, "mail_rate", "lots")
    with pytest.raises(InvalidInput, match="HAFEN_MAIL_RATE"):
        MailReconciler(engine, settings)


def test_a_new_instance_has_smtp_credentials_among_its_secrets(controller, running_instance):
    running_instance("aaa")
    names = set(Instance.objects.get(name="aaa").secrets.values_list("name", flat=True))
    assert names == {"db_password", "admin_password", "smtp_password"}


# -- what operators see: CLI, API, UI --------------------------------------------------------------------------


@pytest.fixture
def mail_world(people, engine, running_instance, controller, settings, monkeypatch):
    from hafen.instances import mail

    monkeypatch.setattr(mail, "get_engine", lambda: engine)
    monkeypatch.setattr(settings, "smtp_url", "smtp://relay:s3cret@mx.example.org:587")
    monkeypatch.setattr(settings, "mail_from", "hafen@mail.example.org")
    controller.mail_state = MailReconciler(engine, settings)
    running_instance("kestrel", organisation="acme")
    controller.heartbeat()
    return people


def test_operators_see_the_relays_state_and_settings_without_the_password(mail_world, capsys, monkeypatch):
    from django.test import Client

    from tests.unit.test_cli import hafen

    code, out, _ = hafen(capsys, monkeypatch, "mail", "status")
    assert code == 0
    assert "unit-mail: running" in out and "smtp://relay:***@mx.example.org:587?tls=verify" in out
    assert "100 mails per hour per instance" in out and "kestrel@mail.example.org" in out
    assert "s3cret" not in out
    response = Client().get("/api/v1/mail", **mail_world.headers("operator"))
    assert response.status_code == 200
    data = response.json()
    assert data["state"] == "running" and data["rate"] == "100/h" and "s3cret" not in response.content.decode()
    assert data["instances"] == [{"name": "kestrel", "sender": "kestrel@mail.example.org",
                                  "network": "unit-kestrel_mail"}]
    for role in ("admin", "member", "outsider"):
        assert Client().get("/api/v1/mail", **mail_world.headers(role)).status_code == 403
        assert Client().post("/api/v1/mail/test", {"address": "a@example.org"}, content_type="application/json",
                             **mail_world.headers(role)).status_code == 403


def test_a_test_mail_is_handed_to_the_relays_sendmail(mail_world, engine, capsys, monkeypatch):
    from django.test import Client

    from tests.unit.test_cli import hafen

    code, out, _ = hafen(capsys, monkeypatch, "mail", "test", "ops@example.org")
    assert code == 0 and "queued at unit-mail" in out
    service, command, env = engine.execs[-1]
    assert service == "unit-mail" and "sendmail" in command[-1]
    assert env["HAFEN_TO"] == "ops@example.org" and env["HAFEN_FROM"] == "hafen@mail.example.org"
    response = Client().post("/api/v1/mail/test", {"address": "x@example.org"}, content_type="application/json",
                             **mail_world.headers("operator"))
    assert response.status_code == 202 and response.json()["to"] == "x@example.org"
    bad = Client().post("/api/v1/mail/test", {"address": "not an address"}, content_type="application/json",
                        **mail_world.headers("operator"))
    assert bad.status_code == 400 and "not an e-mail address" in bad.json()["error"]["message"]
    code, _, err = hafen(capsys, monkeypatch, "mail", "test", "nobody")
    assert code == 2 and err.strip() == "error: not an e-mail address: 'nobody'"
    assert len(engine.execs) == 2


def test_the_mail_page_is_for_operators(mail_world, engine):
    from tests.unit.test_web_backups import client_for, messages_of, page

    text = page(client_for(mail_world, "operator").get("/mail"))
    assert "smtp://relay:***@mx.example.org:587?tls=verify" in text and "kestrel@mail.example.org" in text
    assert "s3cret" not in text
    sent = client_for(mail_world, "operator").post("/mail/test", {"address": "ops@example.org"}, follow=True)
    assert any("queued" in m for m in messages_of(sent)) and engine.execs
    for role in ("admin", "member", "outsider"):
        assert client_for(mail_world, role).get("/mail").status_code == 404
        assert 'href="/mail"' not in page(client_for(mail_world, role).get("/"))


@pytest.mark.parametrize("variable, value", [("HAFEN_SMTP_URL", "ftp://x"), ("HAFEN_MAIL_FROM", "nobody@"),
                                             ("HAFEN_MAIL_RATE", "often")])
def test_hafen_up_refuses_bad_mail_settings_with_one_line(variable, value, capsys, monkeypatch):
    from hafen.config import get_settings
    from tests.unit.test_cli import hafen

    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        code, _, err = hafen(capsys, monkeypatch, "up", "--detach")
    finally:
        monkeypatch.delenv(variable)
        get_settings.cache_clear()
    assert code == 2 and err.strip().startswith("error: ") and variable in err and len(err.strip().splitlines()) == 1
