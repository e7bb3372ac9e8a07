"""The edge agents' reports: their format, and the agent's side that writes them from its proxy's log."""

import http.server
import importlib.machinery
import importlib.util
import json
import re
import sys
import threading
import time
from pathlib import Path

import pytest

from hafen.edge import config as caddy
from hafen.edge import report
from hafen.edge.remote import RemoteEdges
from hafen.engine.fake import FakeEngine
from hafen.engine.swarm import log_time

AGENT = Path(__file__).parents[2] / "hafen/edge/agent/hafen-edge-agent"


def test_a_report_goes_over_lines_that_docker_does_not_split_and_comes_back_whole():
    seen = {f"i{n:04}.example.org": 1_700_000_000.5 + n for n in range(450)}
    lines = report.Report("n2", seen, {"10.0.1.5:8000": 2}).lines()
    assert len(lines) == 3 and all(len(line) < 16 * 1024 for line in lines)
    back = [report.parse(f"2026-11-27T10:00:00Z agent.1.x@node2 | {line}") for line in lines]
    assert all(r is not None and r.node == "n2" and r.open == {"10.0.1.5:8000": 2} for r in back)
    assert {h: t for r in back if r for h, t in r.seen.items()} == seen
    assert report.Report("n2", {}, None).lines() == [report.TAG + '{"node":"n2","open":null,"seen":{}}']


@pytest.mark.parametrize("text", ["hafen-edge-agent: attached to x", report.TAG + "{", report.TAG + "[1]",
                                  report.TAG + '{"node": "n", "seen": {"a": "x"}, "open": {}}',
                                  report.TAG + '{"node": "n", "seen": [], "open": {}}'])
def test_other_lines_and_broken_reports_are_no_reports(text):
    assert report.parse(text) is None


def test_the_newest_request_of_a_host_at_any_proxy_and_the_open_requests_summed():
    calls = []
    remote = RemoteEdges(FakeEngine(), "agents", lambda: calls.append("request"), lambda: calls.append("traffic"))
    remote.watch(["b.test"])
    for text in report.Report("n2", {"a.test": 10.0}, {"10.0.0.1:8000": 1}).lines() \
            + report.Report("n3", {"a.test": 12.0, "b.test": 5.0}, {"10.0.0.1:8000": 2}).lines():
        remote.feed(text)
    assert remote.last_seen() == {"a.test": 12.0, "b.test": 5.0}
    assert remote.open_requests() == {"10.0.0.1:8000": 3}
    assert calls == ["traffic", "traffic", "request"]
    remote.feed(report.Report("n3", {"b.test": 4.0}, {}).lines()[0])  # older: nothing new
    assert calls[-1] == "request" and len(calls) == 3 and remote.open_requests() == {"10.0.0.1:8000": 1}
    assert remote.silent(["n2", "n3", "n4"]) == ["n4"]


def test_reports_replayed_from_before_the_controller_started_count_as_old_as_they_are():
    remote = RemoteEdges(FakeEngine(), "agents", lambda: None)
    now = time.time()
    remote.feed(report.Report("n2", {"a.test": now - 100}, {}).lines()[0], at=now - 60)  # a dead agent's last words
    remote.feed(report.Report("n3", {}, {}).lines()[0], at=now - 2)
    assert remote.silent(["n2", "n3"]) == ["n2"]
    assert remote.last_seen() == {"a.test": now - 100}  # its requests still count
    remote.feed(report.Report("n3", {}, None).lines()[0], at=now - 30)  # an older line read late changes nothing
    assert remote.silent(["n3"]) == []


def test_the_engine_reads_the_daemonslog_timestamps():
    assert log_time("2026-11-27T13:40:20.123456789Z") == pytest.approx(1795786820.123456)
    assert log_time("2026-11-27T13:40:20Z") == pytest.approx(1795786820.0)
    assert abs(log_time("not-a-time") - time.time()) < 5


@pytest.fixture
def agent(tmp_path, monkeypatch):
    """The agent's script, loaded as its image runs it (its two hafen modules from hafen/edge)."""
    monkeypatch.setenv("HAFEN_EDGE_LIB", str(AGENT.parent))
    monkeypatch.setenv("HAFEN_EDGE_CONF_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    loader = importlib.machinery.SourceFileLoader("hafen_edge_agent", str(AGENT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def access_line(host, ts):
    return json.dumps({"ts": ts, "request": {"host": host}, "status": 200}) + "\n"


def test_the_agent_reports_a_hosts_first_request_at_once_then_every_step_and_beats(agent, tmp_path):
    log = tmp_path / "access.log"
    log.write_text(access_line("a.test", 100.0) + access_line("b.test", 101.0))
    reporter = agent.Reporter("n2", "access.log")
    first = reporter.step(0.0)
    assert (first.node, first.seen, first.open) == ("n2", {"a.test": 100.0, "b.test": 101.0}, None)  # no proxy
    with log.open("a") as f:
        f.write(access_line("a.test", 102.0) + access_line("b.test", 107.0))
    assert reporter.step(1.0).seen == {"b.test": 107.0}  # a.test moved by less than a step
    assert reporter.step(1.5) is None
    beat = reporter.step(1.0 + report.HEARTBEAT)
    assert beat is not None and beat.seen == {}


def test_the_status_server_lists_the_sleepers_for_the_agents_only():
    routes = [caddy.Route("a.test", "a", "waking"), caddy.Route("b.test", "b", "starting")]
    first = caddy.build(routes, ["a.test"])["apps"]["http"]["servers"]["status"]["routes"][-2]
    assert first["match"] == [{"host": [caddy.ASLEEP_HOST], "path": [caddy.ASLEEP_PATH]}]
    assert first["handle"][0]["body"] == "a.test\n"
    assert "." not in caddy.ASLEEP_HOST  # the proxy forwards no such host (HOST_PATTERN): no client gets it
    assert not re.fullmatch(caddy.HOST_PATTERN, caddy.ASLEEP_HOST)


def test_the_agent_keeps_its_proxys_folder_of_sleepers_from_the_status_servers_list(agent, tmp_path):
    listed = {"body": b"a.test\nb.test\n"}

    class Status(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers["Host"] == "hafen-edge-agent" and self.path == "/.hafen-asleep"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(listed["body"] if ok else b"")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sleepers = agent.Sleepers(f"http://127.0.0.1:{server.server_port}/.hafen-asleep", "hafen-edge-agent")
        (tmp_path / "asleep").mkdir()
        (tmp_path / "asleep" / "gone.test").touch()
        sleepers.sync()
        assert sorted(p.name for p in (tmp_path / "asleep").iterdir()) == ["a.test", "b.test"]
        listed["body"] = b"b.test\n"
        sleepers.sync()
        assert sorted(p.name for p in (tmp_path / "asleep").iterdir()) == ["b.test"]
        server.shutdown()
        sleepers.sync()  # the status server does not answer: the folder stays as it was
        assert sorted(p.name for p in (tmp_path / "asleep").iterdir()) == ["b.test"]
    finally:
        server.server_close()
