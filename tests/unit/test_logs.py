"""Central logs and grouped errors: parsing, tracebacks, signatures, the store's filters, access, retention,
the ingest of the collector's spool, the logging driver on every spec, and the CLI, API and UI.

Runs on both control-plane databases: with PostgreSQL the lines go to its store (PostgresStore).
"""

from __future__ import annotations

import os
import time

import pytest
from django.db import connection
from django.test import Client

from hafen.controller.logs import OWN_LOGGING, specs
from hafen.engine.base import LogDriver, PublishedPort, ServiceSpec, log_tag
from hafen.engine.fake import FakeEngine
from hafen.instances.models import Instance
from hafen.logs import groups
from hafen.logs import services as log_services
from hafen.logs.ingest import Ingester
from hafen.logs.models import ErrorGroup
from hafen.logs.parse import Assembler, Line, Traceback, level_of, parse
from hafen.logs.store import PostgresStore, Query, SqliteStore, fts_phrase
from tests.unit.test_cli import hafen

# The lines are dated from the import: a test asking relative to the clock leaves a margin of hours, as
# the whole suite runs for more than an hour before the unit tests.
NOW = time.time()
TRACEBACK = """Traceback (most recent call last):
  File "/app/openslides/core/views.py", line {n}, in get
    return self.compute(item_{n})
  File "/app/openslides/core/views.py", line 88, in compute
    raise KeyError(key)
KeyError: 'item_{n}'"""


def raw(message: str, instance: str = "ant", service: str = "web", container: str = "0123456789ab",
        ts: float = NOW, prefix: str = "unit", pri: int = 30) -> str:
    """A line as Docker's syslog driver (rfc5424micro) sends it and the collector spools it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"
    tag = f"{prefix}.{instance}.{service}/{container}"
    return f"<{pri}>1 {stamp} node1 {tag} 812 {tag} - {message}"


def line(message: str, **kwargs) -> Line:
    parsed = parse(raw(message, **kwargs))
    assert parsed is not None
    return parsed


@pytest.fixture
def store(tmp_path, monkeypatch):
    chosen = PostgresStore() if connection.vendor == "postgresql" else SqliteStore(tmp_path / "logs.sqlite3")
    monkeypatch.setattr(log_services, "get_store", lambda: chosen)
    yield chosen
    if isinstance(chosen, PostgresStore) and chosen._ready:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM hafen_log_lines; DELETE FROM hafen_log_spool")
    ErrorGroup.objects.all().delete()


# -- parsing ------------------------------------------------------------------------------------------


def test_a_drivers_line_names_its_instance_service_container_and_time():
    parsed = line("  indented [x] message", instance="my-event", service="worker", ts=1_700_000_000.25)
    assert (parsed.prefix, parsed.instance, parsed.service, parsed.container) == ("unit", "my-event", "worker",
                                                                                   "0123456789ab")
    assert parsed.ts == pytest.approx(1_700_000_000.25)
    assert parsed.message == "  indented [x] message"  # leading space kept (a traceback's frames)
    own = parse(raw("started", instance="", service="edge", container=""))
    assert own is not None and (own.instance, own.service) == ("", "edge")


def test_what_no_hafen_service_sent_is_not_a_line():
    assert parse("garbage") is None
    assert parse("<30>1 2026-01-01T00:00:00Z host sshd 12 sshd - login") is None  # no hafen tag
    assert parse("<30>1 notatime host unit.ant.web/ab 1 unit.ant.web/ab - x") is None


@pytest.mark.parametrize(("message", "level"), [
    ("2026-11-27 10:00:00 ERROR django.request: Internal Server Error", "error"),
    ("WARNING: low disk", "warning"),
    ('{"level": "debug", "msg": "x"}', "debug"),
    ("level=error msg=boom", "error"),
    ("[CRITICAL] gone", "critical"),
    ("GET / HTTP/1.1 200", "info"),
    ("the word error in lower case is no level", "info"),
])
def test_level_is_what_a_line_says_of_itself(message, level):
    assert level_of(message) == level


def test_tracebacks_are_joined_per_container_among_other_containers_lines():
    assembler = Assembler()
    one = TRACEBACK.format(n=1).splitlines()
    two = ["Traceback (most recent call last):", '  File "/x.py", line 3, in <module>', "    main()",
           "ValueError: bad value 42"]
    events = []
    events += assembler.feed(line("before it", container="aaaaaaaaaaaa"))
    for a, b in zip(one, [*two, "", ""], strict=False):  # interleaved, as two containers write at once
        events += assembler.feed(line(a, container="aaaaaaaaaaaa"))
        if b:
            events += assembler.feed(line(b, container="bbbbbbbbbbbb"))
    tracebacks = [e for e in events if isinstance(e, Traceback)]
    assert [(t.line.container, t.exc_type) for t in tracebacks] == [("bbbbbbbbbbbb", "ValueError"),
                                                                     ("aaaaaaaaaaaa", "KeyError")]
    assert tracebacks[1].frames == [("/app/openslides/core/views.py", "get"),
                                    ("/app/openslides/core/views.py", "compute")]
    assert tracebacks[1].context == ["before it"]
    assert tracebacks[0].exc_message == "bad value 42"
    error_line = list(assembler.feed(line("ERROR: disk full on /dev/sda1")))
    assert len(error_line) == 1 and isinstance(error_line[0], Line)


def _traceback(n: int, container: str = "aaaaaaaaaaaa", **kwargs) -> Traceback:
    assembler = Assembler()
    for text in TRACEBACK.format(n=n).splitlines():
        events = list(assembler.feed(line(text, container=container, **kwargs)))
    assert len(events) == 1 and isinstance(events[0], Traceback)
    return events[0]


def test_signature_leaves_out_line_numbers_ids_and_values():
    first = groups.occurrence(_traceback(17), "acme")
    again = groups.occurrence(_traceback(934, container="cccccccccccc"), "acme")
    assert first.signature == again.signature and first.kind == "KeyError"
    assert first.message == "'<s>'"
    other = groups.occurrence(Line(NOW, "unit", "ant", "web", "", "error", "ERROR: disk full at 0xdeadbeef"), "")
    same = groups.occurrence(Line(NOW, "unit", "ant", "web", "", "error", "ERROR: disk full at 0x1234"), "")
    assert other.signature == same.signature != first.signature
    assert groups.normalise("user 42 id 5f0c1d2e-0c1d-4e5f-8a9b-0c1d2e3f4a5b at 2026-11-27T10:00:00Z") == \
        "user <n> id <uuid> at <time>"


def test_groups_count_and_what_alerts_and_metrics_read(store):
    assert groups.record([groups.occurrence(_traceback(1, ts=NOW - 60), "acme")]) == 1
    assert groups.record([groups.occurrence(_traceback(2, ts=NOW), "acme") for _ in range(2)]) == 0
    assert groups.record([groups.occurrence(_traceback(3, instance="cat"), "globex")]) == 1
    ant = ErrorGroup.objects.get(instance="ant")
    assert ant.count == 3 and ant.last_seen > ant.first_seen and "KeyError" in ant.sample
    assert groups.kinds_per_instance() == [("ant", "acme", 1), ("cat", "globex", 1)]


# -- the store --------------------------------------------------------------------------------------


def _fill(store):
    rows = [
        (line("GET /motions 200 fine", ts=NOW - 3600), "acme"),
        (line("ERROR: payment webhook failed", ts=NOW - 600, service="worker"), "acme"),
        (line("secret globex order 7", instance="cat", ts=NOW - 60), "globex"),
        (line("controller: started", instance="", service="controller", container="", ts=NOW - 30), ""),
    ]
    store.insert(rows)
    return rows


def test_search_by_words_fields_level_and_time(store):
    _fill(store)

    def found(**kw):
        return [r.message for r in store.search(Query(**kw))]

    assert found() == ["controller: started", "secret globex order 7", "ERROR: payment webhook failed",
                       "GET /motions 200 fine"]
    assert found(text="payment webhook") == ["ERROR: payment webhook failed"]
    assert found(text="webho") == ["ERROR: payment webhook failed"]  # the last word as a prefix
    assert found(text="webhook payment") == []  # words in order
    assert found(text='"; DROP TABLE lines; --') == []  # no query syntax from users
    assert found(instance="ant", service="worker") == ["ERROR: payment webhook failed"]
    assert found(org="globex") == ["secret globex order 7"]
    assert found(level="warning") == ["ERROR: payment webhook failed"]
    assert found(since=NOW - 700, until=NOW - 100) == ["ERROR: payment webhook failed"]
    last = store.search(Query(limit=1))[0].id
    store.insert([(line("a new one"), "acme")])
    assert found(after_id=last) == ["a new one"]
    assert found(limit=2) == ["a new one", "controller: started"]
    assert fts_phrase("a-b  c") == '"a b c" *' and fts_phrase("--") == ""


def test_a_customer_sees_its_organisations_lines_never_hafens_own(store):
    _fill(store)
    assert {r.message for r in store.search(Query(orgs=frozenset({"acme"})))} == {
        "GET /motions 200 fine", "ERROR: payment webhook failed"}
    assert store.search(Query(orgs=frozenset())) == []
    assert store.search(Query(orgs=frozenset({"acme"}), org="globex")) == []


def test_retention_removes_older_lines(store):
    _fill(store)
    assert store.prune(NOW - 120) == 2
    assert store.count() == 2
    assert [r.message for r in store.search(Query(text="payment"))] == []


# -- the ingest of the collector's spool --------------------------------------------------------------


def test_ingest_reads_on_joins_groups_and_deletes_read_minutes(store, tmp_path, people, running_instance):
    running_instance("ant", organisation="acme")
    spool = tmp_path / "spool"
    spool.mkdir()
    old = spool / "20261127-1000.log"
    old.write_text("\n".join([raw("first"), raw("other installation's", prefix="other"), "garbage"]) + "\n")
    os.utime(old, (NOW - 60, NOW - 60))
    current = spool / "20261127-1001.log"
    current.write_text("\n".join(raw(t) for t in TRACEBACK.format(n=5).splitlines()) + "\n" + raw("half"))
    ingester = Ingester(spool, store, "unit", 14 * 86400)
    assert ingester.once() == 7
    assert not old.exists() and current.exists()
    assert ingester.once() == 0  # read on from where it ended: nothing twice
    with current.open("a") as handle:  # the line it wrote half of is finished, and a traceback comes again
        handle.write(" done\n" + "\n".join(raw(t) for t in TRACEBACK.format(n=6).splitlines()) + "\n")
    assert ingester.once() == 7
    rows = store.search(Query(limit=50))
    assert {r.org for r in rows} == {"acme"}
    assert "half done" in [r.message for r in rows]
    assert [r.level for r in rows if r.message.startswith("KeyError")] == ["error", "error"]
    group = ErrorGroup.objects.get()
    assert (group.instance, group.org, group.kind, group.count) == ("ant", "acme", "KeyError", 2)
    # a new ingester (the controller restarted) reads on from the stored offsets
    assert Ingester(spool, store, "unit", 14 * 86400).once() == 0


def test_ingest_prunes_lines_and_groups_past_the_retention(store, tmp_path):
    store.insert([(line("old", ts=NOW - 3 * 86400), ""), (line("new"), "")])
    groups.record([groups.occurrence(_traceback(1, ts=NOW - 3 * 86400), "")])
    Ingester(tmp_path, store, "unit", 2 * 86400).prune()
    assert [r.message for r in store.search(Query())] == ["new"]
    assert not ErrorGroup.objects.exists()


# -- the logging driver -------------------------------------------------------------------------------


def test_every_service_and_container_gets_the_collectors_driver_tagged_with_its_name(controller, engine,
                                                                                  running_instance, settings):
    engine.log_driver = LogDriver("syslog", (("syslog-address", "udp://127.0.0.1:5514"),))
    running_instance("ant")
    controller.pass_once()
    assert engine.log_drivers
    for name, driver in engine.log_drivers.items():
        if name.startswith(f"{settings.prefix}-logs"):
            assert driver == OWN_LOGGING  # the collector does not log to itself
            continue
        assert driver is not None and driver.name == "syslog", name
        options = dict(driver.options)
        assert options["syslog-address"] == "udp://127.0.0.1:5514"
        assert options["tag"].endswith("/{{.ID}}")
    web = dict(engine.log_drivers["unit-ant_web"].options)["tag"]
    assert web == "unit.ant.web/{{.ID}}"


def test_the_driver_is_kept_out_of_the_digest_but_a_change_applies():
    spec = ServiceSpec(name="x", image="i", labels={"hafen.prefix": "p", "hafen.instance": "i1",
                                                    "hafen.service": "web"})
    assert spec.digest() == ServiceSpec(name="x", image="i", labels=spec.labels, log_driver=OWN_LOGGING).digest()
    assert log_tag(spec) == "p.i1.web/{{.ID}}"
    engine = FakeEngine()
    engine.apply_service(spec, None)
    state = engine.observe("p").services["x"]
    engine.log_driver = LogDriver("syslog")
    assert engine.log_changed(spec, state.labels)
    # a tcp port keeps the digest it had before ports had a protocol
    assert ServiceSpec(name="x", image="i", ports=[PublishedPort(1, 2)]).digest() != \
        ServiceSpec(name="x", image="i", ports=[PublishedPort(1, 2, "udp")]).digest()


def test_collector_specs_primary_on_this_node_forwarders_elsewhere(settings, engine):
    obs = engine.observe(settings.prefix)
    primary, forwarder = specs(settings, obs)
    assert primary.constraints == [f"node.id == {obs.local_node}"] and not primary.global_mode
    assert primary.mounts[0].kind == "bind" and primary.mounts[0].target == "/spool"
    assert forwarder.global_mode and forwarder.constraints == [f"node.id != {obs.local_node}"]
    assert forwarder.env["HAFEN_FORWARD_TO"].endswith(f":{settings.log_port}")
    assert {(p.protocol, p.published) for p in primary.ports} == {("udp", settings.log_port),
                                                                   ("tcp", settings.log_port)}
    assert primary.memory_bytes and forwarder.memory_bytes


# -- CLI, API and UI ---------------------------------------------------------------------------------


@pytest.fixture
def logged(store, people, running_instance):
    running_instance("ant", organisation="acme")
    running_instance("cat", organisation="globex")
    _fill(store)
    groups.record([groups.occurrence(_traceback(1), "acme"),
                   groups.occurrence(_traceback(1, instance="cat"), "globex"),
                   groups.occurrence(_traceback(1, instance="", service="controller"), "")])
    return people


def test_api_search_and_errors_follow_the_organisations(logged):
    client = Client()

    def messages(role, **params):
        response = client.get("/api/v1/logs", params, **logged.headers(role))
        assert response.status_code == 200, response.content
        return {r["message"] for r in response.json()["lines"]}

    assert messages("operator") >= {"controller: started", "secret globex order 7"}
    assert messages("member") == {"GET /motions 200 fine", "ERROR: payment webhook failed"}
    assert messages("outsider", q="payment") == set()
    assert messages("outsider", q="secret") == {"secret globex order 7"}
    assert messages("admin", instance="cat") == set()
    assert client.get("/api/v1/logs", {"level": "loud"}, **logged.headers("operator")).status_code == 400
    assert client.get("/api/v1/logs", {"limit": 0}, **logged.headers("operator")).status_code == 400
    assert client.get("/api/v1/logs").status_code == 401

    def kinds(role):
        return {(g["instance"], g["count"]) for g in client.get("/api/v1/errors", **logged.headers(role)).json()}

    assert kinds("operator") == {("ant", 1), ("cat", 1), ("", 1)}
    assert kinds("member") == {("ant", 1)}
    cat = ErrorGroup.objects.get(instance="cat").id
    assert client.get(f"/api/v1/errors/{cat}", **logged.headers("admin")).status_code == 404
    assert client.get(f"/api/v1/errors/{cat}", **logged.headers("outsider")).json()["kind"] == "KeyError"


def test_ui_log_page_and_errors_follow_the_organisations(logged):
    client = Client()
    client.force_login(logged.users["outsider"])
    page = client.get("/logs", {"q": "secret"}).content.decode()
    assert "secret globex order 7" in page
    assert "payment webhook" not in client.get("/logs").content.decode()
    assert "controller: started" not in client.get("/logs").content.decode()
    tail = client.get("/logs/tail", {"after": 0, "live": "1"}).content.decode()
    assert "secret globex order 7" in tail and "every 2s" in tail
    errors = client.get("/errors").content.decode()
    assert "cat" in errors and "ant" not in errors
    ant = ErrorGroup.objects.get(instance="ant").id
    assert client.get(f"/errors/{ant}").status_code == 404
    client.force_login(logged.users["operator"])
    assert "controller: started" in client.get("/logs").content.decode()
    assert "payment webhook" in client.get(f"/errors/{ant}").content.decode() or \
        "KeyError" in client.get(f"/errors/{ant}").content.decode()
    assert "until:" in client.get("/logs", {"until": "yesterday"}).content.decode()


def test_cli_searches_and_lists_errors(logged, capsys, monkeypatch):
    code, out, _ = hafen(capsys, monkeypatch, "logs", "--grep", "payment", "--level", "error")
    assert code == 0 and "ant/worker ERROR ERROR: payment webhook failed" in out
    code, out, _ = hafen(capsys, monkeypatch, "logs", "ant", "--since", "1d", "--json")
    assert code == 0 and {r["message"] for r in __import__("json").loads(out)} == {
        "GET /motions 200 fine", "ERROR: payment webhook failed"}
    code, out, _ = hafen(capsys, monkeypatch, "errors", "--instance", "ant")
    assert code == 0 and "ant/web KeyError" in out and "x1" in out
    code, _, err = hafen(capsys, monkeypatch, "logs", "--grep", "x", "--since", "yesterday")
    assert code == 2 and err.startswith("error: --since")
    code, _, err = hafen(capsys, monkeypatch, "logs", "--grep", "x", "--tail", "3")
    assert code == 2 and "--limit" in err


def test_kinds_per_instance_survives_an_erased_instance(logged):
    Instance.objects.filter(name="cat").delete()
    assert ("cat", "globex", 1) in groups.kinds_per_instance()


def test_the_controllers_lines_go_to_the_collector_as_a_drivers_do_even_after_a_close():
    import logging
    import socket

    from hafen.logs.shipping import CollectorHandler

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(5)
        handler = CollectorHandler("unit", collector.getsockname()[1])
        record = logging.LogRecord("hafen.controller", logging.ERROR, __file__, 1, "boom\n  at %s", ("x",), None)
        handler.emit(record)
        handler.close()  # as Django's logging set-up closes every handler
        handler.emit(record)
        received = [parse(collector.recv(65536).decode()) for _ in range(4)]
    assert [(r.instance, r.service, r.level, r.message) for r in received if r] == [
        ("", "controller", "error", "ERROR hafen.controller: boom"), ("", "controller", "info", "  at x")] * 2
