"""The CLI: its error path run as a real process (one clear line on stderr, never a traceback); in process, on
the local backend, what it prints of what others wrote, and how long it waits."""

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from hafen import cli
from hafen.access import audit
from hafen.access.models import AuditEntry, Result
from hafen.access.policy import Actor
from hafen.instances import services
from hafen.instances.models import ControlPlane, Instance, Lock, Operation, OpState

CASES = {
    "bad-name": (["create", "Bad_Name", "--app", "demo"], 2, "invalid name 'Bad_Name'"),
    "unknown-app": (["create", "abc", "--app", "nope"], 2, "unknown app 'nope'"),
    "image-missing": (["create", "abc", "--app", "demo"], 2, "hafen images build"),
    "erase-unconfirmed": (["erase", "abc"], 2, "--yes"),
    "scale-not-a-number": (["scale", "abc", "notanumber"], 2, "notanumber"),
    "show-unknown": (["show", "nosuch"], 3, "no instance named 'nosuch'"),
    "remote-bad-url": (["--url", "ftp://example", "--token", "t", "list"], 2, "must start with http"),
    "remote-no-token": (["--url", "http://127.0.0.1:9", "list"], 2, "needs a token"),
    "remote-unreachable": (["--url", "http://127.0.0.1:9", "--token", "t", "list"], 5, "cannot reach"),
    "remote-local-only": (["--url", "http://127.0.0.1:9", "--token", "t", "org", "create", "x"], 2, "host"),
    "org-bad-slug": (["org", "create", "Not A Slug"], 2, "invalid organisation"),
    "member-unknown-org": (["org", "add-member", "nosuch", "alice"], 3, "no organisation 'nosuch'"),
    "org-label-unknown-org": (["org", "label", "nosuch", "customer=acme"], 3, "no organisation 'nosuch'"),
    "org-label-remote": (["--url", "http://127.0.0.1:9", "--token", "t", "org", "label", "x", "a=b"], 2, "host"),
    "lock-unknown-action": (["lock", "nosuch", "-a", "fly", "--reason", "x"], 3, "no instance named"),
    "node-unknown": (["node", "drain", "nosuch"], 3, "no node 'nosuch'"),
    "node-bad-label": (["node", "label", "host1", "novalue"], 2, "not KEY=VALUE"),
    "node-remove-manager": (["node", "remove", "host1"], 4, "is a manager"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case at once, each in its own data directory, to keep the tier fast."""
    running = {}
    for key, (args, _, _) in CASES.items():
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env.update(HAFEN_ENGINE="fake", HAFEN_DATA_DIR=str(tmp_path_factory.mktemp(f"cli-{key}")))
        running[key] = subprocess.Popen(
            [sys.executable, "-m", "hafen", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    done = {}
    for key, proc in running.items():
        stdout, stderr = proc.communicate(timeout=60)
        done[key] = (proc.returncode, stdout, stderr)
    return done


@pytest.mark.parametrize("key", list(CASES))
def test_error_exits_non_zero_without_traceback(results, key):
    _, expected_code, expected_text = CASES[key]
    code, stdout, stderr = results[key]
    assert "Traceback" not in stdout + stderr
    assert code == expected_code, stderr
    assert stdout == ""
    assert stderr.startswith("error: ")
    assert expected_text in " ".join(stderr.split())


@pytest.mark.parametrize("key", list(CASES))
def test_error_is_one_line(results, key):
    _, _, expected_text = CASES[key]
    _, _, stderr = results[key]
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert expected_text in lines[0]


# -- in-process, on the local backend: what the CLI prints of what others wrote, and how long it waits ------------

# Text that rich would read as markup, or as an emoji code, were it not printed as plain text.
MARKUP = ["[/]", "[bold]", "[/bold]", "[red]x[/red]", ":smile:"]
LONG = "[/]" + "x" * 10_000


def hafen(capsys, monkeypatch, *args):
    """Run `hafen ARGS` as the `hafen` command does (hafen.cli.main); return exit code, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["hafen", *args])
    monkeypatch.setenv("COLUMNS", "100")
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


def squeezed(text):
    """Text without the whitespace that wrapping adds."""
    return "".join(text.split())


def test_a_failed_web_login_with_a_markup_user_name_shows_in_the_audit(capsys, monkeypatch):
    response = Client().post("/login", {"username": "[/]", "password": "no account"})
    assert response.status_code == 200
    assert AuditEntry.objects.filter(action="login", actor="[/]", result="refused").exists()
    code, out, err = hafen(capsys, monkeypatch, "audit")
    assert code == 0, err
    row = next(line for line in out.splitlines() if "login" in line)
    assert row.split()[2] == "[/]"
    code, out, _ = hafen(capsys, monkeypatch, "audit", "--actor", "[/]")
    assert code == 0 and "[/]" in out


@pytest.mark.parametrize("text", MARKUP)
def test_audit_prints_actors_and_messages_as_plain_text(capsys, monkeypatch, text):
    audit.record(Actor(via="api", local_name=text), "stop", Result.REFUSED, instance_name="eve", message=f"no {text}")
    code, out, err = hafen(capsys, monkeypatch, "audit")
    assert code == 0, err
    assert f"{text} (local)" in out and f"no {text}" in out


def test_a_long_audit_message_is_printed_whole(capsys, monkeypatch):
    audit.record(Actor.local(), "stop", Result.FAILED, instance_name="eve", message=LONG)
    code, out, err = hafen(capsys, monkeypatch, "audit")
    assert code == 0, err
    assert LONG in squeezed(out)


@pytest.mark.parametrize("text", [*MARKUP, LONG], ids=[*MARKUP, "10000 characters"])
def test_show_prints_reasons_and_errors_as_plain_text(capsys, monkeypatch, running_instance, text):
    instance = running_instance("eve")
    # a lock's reason and author are as long as their columns allow (PostgreSQL refuses more)
    reason, author = f"why {text}"[:200], f"{text} (api)"[:150]
    Lock.objects.create(instance=instance, actions=["stop"], reason=reason, created_by=author)
    Operation.objects.filter(instance=instance).update(error=f"op {text}")
    observed = instance.observed
    observed["services"]["web"]["error"] = f"task {text}"
    Instance.objects.filter(pk=instance.pk).update(observed=observed, error=f"instance {text}")
    code, out, err = hafen(capsys, monkeypatch, "show", "eve")
    assert code == 0, err
    for shown in (reason, author, f"op {text}", f"task {text}", f"instance {text}"):
        assert squeezed(shown) in squeezed(out), shown
    if text != LONG:
        assert f"stop: why {text} ({text} (api))" in out


def test_a_failed_operation_is_exit_6_with_one_error_line(capsys, monkeypatch, running_instance, engine, controller):
    running_instance("eve")
    engine.fail_jobs.add("unit-eve_setup")
    with controller_running(controller):
        code, out, err = hafen(capsys, monkeypatch, "passwd", "eve", "--timeout", "30")
    assert code == 6, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == ["error: passwd of eve failed: the admin password was not changed: "
                      "setup job setup failed: task: non-zero exit (1)"], err


def test_a_lock_reason_of_ten_thousand_characters_is_refused(capsys, monkeypatch, running_instance):
    running_instance("eve")
    code, out, err = hafen(capsys, monkeypatch, "lock", "eve", "-a", "stop", "--reason", LONG)
    assert (code, out) == (2, "")
    assert err == "error: give the lock a reason of 3 to 200 characters\n"
    assert not Lock.objects.exists()


def test_hafens_own_words_keep_their_style(capsys, monkeypatch, controller):
    monkeypatch.setattr(cli, "out", cli.console(force_terminal=True, color_system="standard", width=100))
    with controller_running(controller):
        code, out, err = hafen(capsys, monkeypatch, "create", "abc", "--app", "demo")
    assert code == 0, err
    assert "\x1b[1;32mabc\x1b[0m is running" in out
    Instance.objects.filter(name="abc").update(error="[red]not red[/red]")
    code, out, err = hafen(capsys, monkeypatch, "show", "abc")
    assert "\x1b[31m[red]not red[/red]\x1b[0m" in out


def test_org_label_sets_and_removes_labels_and_org_list_shows_them(capsys, monkeypatch, running_instance):
    from hafen.access.models import Organisation

    Organisation.objects.create(slug="acme", name="Acme")
    Organisation.objects.create(slug="globex", name="Globex")
    running_instance("eve", organisation="acme")
    code, out, err = hafen(capsys, monkeypatch, "org", "label", "acme", "customer=acme", "zone=a")
    assert (code, out) == (0, "acme: node labels customer=acme, zone=a\n"), err
    code, out, err = hafen(capsys, monkeypatch, "org", "label", "acme", "zone-")
    assert (code, out) == (0, "acme: node labels customer=acme\n"), err
    assert Organisation.objects.get(slug="acme").node_labels == {"customer": "acme"}
    code, out, err = hafen(capsys, monkeypatch, "org", "list")
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows == {"acme": ["Acme", "0", "1", "customer=acme", "any", "time"],
                    "globex": ["Globex", "0", "0", "any", "node", "any", "time"]}
    code, out, err = hafen(capsys, monkeypatch, "org", "list", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(o["slug"], o["node_labels"]) for o in listed] == [("acme", {"customer": "acme"}), ("globex", {})]
    assert AuditEntry.objects.filter(action="label-organisation", result="ok", via="cli").count() == 2


def test_org_label_refuses_bad_labels_with_one_line_and_changes_nothing(capsys, monkeypatch):
    from hafen.access.models import Organisation

    Organisation.objects.create(slug="acme", name="Acme", node_labels={"customer": "acme"})
    for bad, message in ((["novalue"], "not KEY=VALUE or KEY-: 'novalue'"),
                         (["hafen.drain=moving"], "not a label key: 'hafen.drain'")):
        code, out, err = hafen(capsys, monkeypatch, "org", "label", "acme", *bad)
        assert (code, out) == (2, ""), err
        assert err.splitlines() == [f"error: {message} (letters, digits, '.', '_', '-'; not hafen.*)"
                                    if "key" in message else f"error: {message}"]
    assert Organisation.objects.get(slug="acme").node_labels == {"customer": "acme"}


def test_org_list_without_organisations(capsys, monkeypatch):
    code, out, err = hafen(capsys, monkeypatch, "org", "list")
    assert (code, out) == (0, "no organisations\n"), err


# -- waiting ----------------------------------------------------------------------------------------------


@contextmanager
def controller_running(controller, stop_when=None):
    """Controller passes in a thread, as `hafen up` runs them beside the CLI, until the block ends or
    `stop_when()` holds (then the controller is gone: its heartbeat is made stale)."""
    done = threading.Event()
    failures = []

    def run():
        try:
            while not done.is_set():
                controller.pass_once()
                if stop_when is not None and stop_when():
                    ControlPlane.objects.update(beat_at=timezone.now() - timedelta(minutes=5))
                    return
                time.sleep(0.05)
        except Exception as exc:  # reported to the test below
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)
    assert not failures, failures


def _on_a_step(name):
    def check():
        op = Operation.objects.filter(instance_name=name, kind="restart").first()
        return op is not None and op.state == OpState.RUNNING
    return check


def test_a_slow_operation_is_still_running_not_a_dead_control_plane(capsys, monkeypatch, running_instance, engine,
                                                                     controller):
    running_instance("eve")
    engine.hold.add("unit-eve_web")
    with controller_running(controller):
        started = time.monotonic()
        code, out, err = hafen(capsys, monkeypatch, "restart", "eve", "--timeout", "1")
    assert time.monotonic() - started < 10
    assert code == 10, err
    op = Operation.objects.get(instance_name="eve", kind="restart")
    assert op.state == OpState.RUNNING
    step = op.current_step()["title"]
    lines = err.splitlines()
    assert lines[-1].startswith("error: restart of eve is still running after 1 s (now: ")
    assert f"(now: {step})" in lines[-1] and "`hafen show eve`" in lines[-1] and "--timeout" in lines[-1]


def test_a_stale_heartbeat_while_waiting_is_a_dead_control_plane(capsys, monkeypatch, running_instance, engine,
                                                                 controller):
    running_instance("eve")
    engine.hold.add("unit-eve_web")
    with controller_running(controller, stop_when=_on_a_step("eve")):
        code, out, err = hafen(capsys, monkeypatch, "restart", "eve", "--timeout", "1")
    assert code == 5, err
    assert err.splitlines()[-1] == "error: the control plane is not running; start it with `hafen up --detach`"


def test_passwd_prints_the_password_even_when_it_stops_waiting(capsys, monkeypatch, running_instance, engine,
                                                               controller):
    running_instance("eve")
    old = services.credentials(Actor.local(), "eve").password
    engine.hold.add("unit-eve_setup")
    with controller_running(controller):
        code, out, err = hafen(capsys, monkeypatch, "passwd", "eve", "--timeout", "0.5")
    assert code == 10, err
    assert out.startswith("new admin password of eve, once the operation has finished: ")
    password = out.split(": ", 1)[1].strip()
    assert password != old
    # until the app has it, the credentials are the ones the app has
    assert services.credentials(Actor.local(), "eve").password == old


@pytest.mark.parametrize("args", [["create", "abc", "--app", "demo"], ["start", "abc"], ["stop", "abc"],
                                  ["restart", "abc"], ["delete", "abc"], ["erase", "abc", "--yes"],
                                  ["scale", "abc", "2"], ["passwd", "abc"]])
def test_every_command_that_waits_takes_a_timeout(args):
    from click.testing import CliRunner

    result = CliRunner().invoke(cli.cli, [*args, "--help"])
    assert result.exit_code == 0 and "--timeout SECONDS" in result.output
    refused = CliRunner().invoke(cli.cli, [*args, "--timeout", "0"])
    assert refused.exit_code == 2 and "range x>0" in refused.output
