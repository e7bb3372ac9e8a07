"""Bad input against a real control plane: one clear line, non-zero exit, nothing made."""

from __future__ import annotations

import pytest

from tests.conftest import Plane

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def taken(plane: Plane) -> str:
    plane.create("taken", "demo")
    yield "taken"
    plane.hafen("erase", "taken", "--yes", check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "Bad_Name", "--app", "demo"], "invalid name"),
        (["create", "ab", "--app", "demo"], "invalid name"),
        (["create", "taken", "--app", "demo"], "exists already"),
        (["create", "fresh-one", "--app", "nosuchapp"], "unknown app"),
        (["create", "fresh-one", "--app", "demo", "--version", "9.9"], "unknown version"),
        (["create", "fresh-one", "--app", "demo", "--domain", "not a domain"], "invalid domain"),
        (["create", "fresh-one", "--app", "demo", "--domain", "taken.localhost"], "is taken"),
        (["create", "fresh-one", "--app", "demo", "--size", "huge"], "unknown size"),
        (["scale", "taken", "1000"], "replicas must be"),
        (["erase", "taken"], "--yes"),
        (["show", "nosuch"], "no instance"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(plane: Plane, taken: str, args: list[str], message: str) -> None:
    before = plane.labelled()
    listed = plane.json("list")
    result = plane.hafen(*args, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert plane.labelled() == before
    assert plane.json("list") == listed


def test_engine_not_answering(plane: Plane) -> None:
    result = plane.hafen("create", "fresh-two", "--app", "demo", check=False,
                         env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: the Docker engine does not answer; is it installed and started? (scripts/bootstrap.sh starts it)"
    ]
    assert all(i["name"] != "fresh-two" for i in plane.json("list"))
