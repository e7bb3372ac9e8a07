"""The CLI's error path, run as a real process: one clear line on stderr, never a traceback."""

import os
import subprocess
import sys

import pytest

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
    "lock-unknown-action": (["lock", "nosuch", "-a", "fly", "--reason", "x"], 3, "no instance named"),
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
