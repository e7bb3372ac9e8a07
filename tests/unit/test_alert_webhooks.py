"""An organisation's own alert webhook: set by its admins or the operators, kept encrypted, shown by its host,
and routed by Alertmanager to the alerts about its instances only."""

import json

import pytest
import yaml
from django.test import Client

from hafen.access.models import AuditEntry, Organisation
from hafen.controller import metrics as controller_metrics
from hafen.mail.smarthost import parse
from hafen.metrics import config as files
from tests.unit.test_cli import hafen

HOOK = "https://hooks.example.com/services/T000/B000/s3cretToken"


def call(people, role, body):
    return Client().post("/api/v1/organisations/acme/alert-webhook", data=json.dumps(body),
                         content_type="application/json", **people.headers(role))


def test_an_admin_sets_the_webhook_it_is_stored_encrypted_and_shown_by_its_host(people):
    response = call(people, "admin", {"url": HOOK})
    assert response.status_code == 200, response.content
    assert response.json()["alert_webhook"] == "https://hooks.example.com/…"
    stored = Organisation.objects.get(slug="acme").alert_webhook
    assert stored and "s3cret" not in stored and "hooks.example.com" not in stored
    member_view = Client().get("/api/v1/organisations/acme", **people.headers("member")).json()
    assert member_view["alert_webhook"] == "https://hooks.example.com/…"
    assert "s3cret" not in json.dumps(list(AuditEntry.objects.values("detail")), default=str)
    assert controller_metrics.recipients().webhooks == {"acme": HOOK}
    assert call(people, "operator", {"url": ""}).json()["alert_webhook"] == ""
    assert controller_metrics.recipients().webhooks == {}


@pytest.mark.parametrize("role,body,status", [
    ("admin", {"url": "ftp://hooks.example.com/x"}, 400),
    ("admin", {"url": "not a url"}, 400),
    ("admin", {}, 400),
    ("member", {"url": HOOK}, 403),
    ("read", {"url": HOOK}, 403),
    ("outsider", {"url": HOOK}, 404),
])
def test_bad_or_forbidden_webhooks_change_nothing(people, role, body, status):
    response = call(people, role, body)
    assert response.status_code == status, response.content
    assert set(response.json()) == {"error"}
    assert Organisation.objects.get(slug="acme").alert_webhook == ""


def test_alertmanager_posts_an_organisations_alerts_to_its_own_webhook_even_without_mail(settings):
    recipients = files.Recipients(["ops@example.org"], {"acme": ["alice@acme.example"]},
                                  {"acme": HOOK, "globex": "http://globex.example/hook"})
    for smarthost in (parse("smtp://mail:25?tls=none"), None):
        config = yaml.safe_load(files.alertmanager(settings, recipients, smarthost))
        receivers = {r["name"]: r for r in config["receivers"]}
        assert receivers["org-acme"]["webhook_configs"] == [{"url": HOOK, "send_resolved": True}]
        assert receivers["org-globex"]["webhook_configs"][0]["url"] == "http://globex.example/hook"
        assert "email_configs" not in receivers["org-globex"]  # globex has no admin with an address
        assert ("email_configs" in receivers["org-acme"]) == (smarthost is not None)
        assert {"receiver": "org-globex", "matchers": ['organisation="globex"'], "continue": True} \
            in config["route"]["routes"]
        assert "webhook_configs" not in receivers["operators"]


def test_the_cli_sets_and_clears_the_webhook_with_one_line_for_bad_input(capsys, monkeypatch, people):
    code, out, err = hafen(capsys, monkeypatch, "org", "webhook", "acme", HOOK)
    assert (code, out) == (0, "acme: alert webhook https://hooks.example.com/…\n"), err
    code, out, err = hafen(capsys, monkeypatch, "org", "webhook", "acme")
    assert code == 2 and "give the webhook's URL, or --off" in err and "Traceback" not in err
    code, out, err = hafen(capsys, monkeypatch, "org", "webhook", "acme", "gopher://x")
    assert code == 2 and "http:// or https://" in err
    code, out, err = hafen(capsys, monkeypatch, "org", "webhook", "acme", "--off")
    assert (code, out) == (0, "acme: alert webhook none\n"), err
    assert Organisation.objects.get(slug="acme").alert_webhook == ""


def test_the_organisation_page_sets_and_removes_the_webhook_for_its_admins_only(people):
    from tests.unit.test_web_backups import client_for, messages_of, page

    admin = client_for(people, "admin")
    text = page(admin.get("/orgs/acme"))
    assert "<h2>Alert webhook</h2>" in text and 'action="/orgs/acme/webhook"' in text
    response = admin.post("/orgs/acme/webhook", {"url": "gopher://x"}, follow=True)
    assert any("http:// or https://" in m for m in messages_of(response))
    response = admin.post("/orgs/acme/webhook", {"url": HOOK}, follow=True)
    assert "Alert webhook of acme set." in messages_of(response)
    assert "<code>https://hooks.example.com/…</code>" in page(response) and "s3cret" not in page(response)
    member = page(client_for(people, "member").get("/orgs/acme"))
    assert "hooks.example.com/…" in member and 'action="/orgs/acme/webhook"' not in member
    assert client_for(people, "member").post("/orgs/acme/webhook", {"off": ""}).status_code in (302, 403)
    assert Organisation.objects.get(slug="acme").alert_webhook != ""
    assert client_for(people, "outsider").post("/orgs/acme/webhook", {"off": ""}).status_code == 404
    response = admin.post("/orgs/acme/webhook", {"off": ""}, follow=True)
    assert "Alert webhook of acme removed." in messages_of(response)
    assert Organisation.objects.get(slug="acme").alert_webhook == ""
