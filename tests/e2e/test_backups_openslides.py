"""Backups of a real OpenSlides 3.3 instance, through the edge and the REST API, to the tests' off-host target.

One instance goes through it all, in this order (each test builds on the one before): a motion and a
media file, a backup that gets verified; a restore in place that removes a later motion; a clone that is
independent of its source; the source erased and restored into its own name from the backup.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Plane
from tests.openslides import add_motion, login, titles

pytestmark = pytest.mark.e2e

NAME = "obk"
CLONE = "obk-c"
KEPT = "Kept in the backup"
LATER = "Made after the backup"
ATTACHMENT = os.urandom(300 * 1024)  # incompressible: the bytes must come back as they were
ATTACHMENT_NAME = "minutes.bin"


def session(plane: Plane, domain: str, password: str) -> httpx.Client:
    return login(plane.http(domain), password)


def attachment(client: httpx.Client) -> bytes:
    """The bytes of the one media file, downloaded through the edge."""
    files = client.get("/rest/mediafiles/mediafile/").json()
    assert [f["path"] for f in files] == [ATTACHMENT_NAME]
    response = client.get(f"/media/{ATTACHMENT_NAME}")
    assert response.status_code == 200, response.status_code
    return response.content


def snapshots(plane: Plane, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = plane.json("backups", name)["items"]
    return items


@pytest.fixture(scope="module")
def source(plane: Plane) -> Iterator[dict[str, Any]]:
    data = plane.create(NAME, "openslides")
    yield data
    for name in (CLONE, NAME):
        plane.hafen("erase", name, "--yes", check=False)


@pytest.fixture(scope="module")
def snapshot(plane: Plane, source: dict[str, Any]) -> dict[str, Any]:
    """The backup of the instance with one motion and one media file."""
    client = session(plane, source["domain"], source["password"])
    add_motion(client, KEPT)
    uploaded = client.post("/rest/mediafiles/mediafile/", data={"title": ATTACHMENT_NAME},
                           files={"mediafile": (ATTACHMENT_NAME, ATTACHMENT, "application/octet-stream")})
    assert uploaded.status_code == 201, uploaded.text
    assert attachment(client) == ATTACHMENT
    data: dict[str, Any] = plane.json("backup", NAME)
    return data


def test_the_backup_holds_the_motion_and_the_file_and_is_verified(plane: Plane, snapshot: dict[str, Any]) -> None:
    assert snapshot["status"] == "ok" and snapshot["size"] >= len(ATTACHMENT)
    fingerprint = snapshot["fingerprint"]
    # every table app.toml names exists in OpenSlides' schema (a missing one would count as null)
    assert None not in fingerprint["tables"].values(), fingerprint["tables"]
    assert fingerprint["tables"]["motions_motion"] == 1 and fingerprint["tables"]["mediafiles_mediafile"] == 1
    assert fingerprint["tables"]["users_user"] == 1
    assert fingerprint["volumes"]["media"]["files"] == 1
    assert fingerprint["volumes"]["media"]["bytes"] == len(ATTACHMENT)
    assert fingerprint["schema"]  # the latest migration, from the schema query

    def settled() -> dict[str, Any] | None:
        item = next(s for s in snapshots(plane, NAME) if s["id"] == snapshot["id"])
        return item if item["verification"] in ("verified", "failed") else None

    result = plane.wait_until(settled, timeout=300, interval=2)
    assert result["verification"] == "verified", result["verification_error"]
    assert not {s for s in plane.labelled()["services"] if "-sbx-" in s}  # the sandbox is gone


def test_restore_in_place_removes_a_later_motion(plane: Plane, source: dict[str, Any],
                                                 snapshot: dict[str, Any]) -> None:
    client = session(plane, source["domain"], source["password"])
    add_motion(client, LATER)
    assert titles(client) == sorted([KEPT, LATER])
    plane.hafen("restore", NAME, snapshot["id"], "--yes")
    client = session(plane, source["domain"], source["password"])  # the instance's own password still
    assert titles(client) == [KEPT]
    assert attachment(client) == ATTACHMENT
    assert "safety" in [s["reason"] for s in snapshots(plane, NAME)]
    shown = plane.json("show", NAME)
    assert shown["state"] == "running" and shown["replicas"]["running"] == 1


def test_a_clone_is_independent_of_its_source(plane: Plane, source: dict[str, Any],
                                              snapshot: dict[str, Any]) -> None:
    clone = plane.json("clone", NAME, CLONE)
    assert clone["state"] == "running" and clone["password"] != source["password"]
    copy = session(plane, clone["domain"], clone["password"])
    assert titles(copy) == [KEPT]
    assert attachment(copy) == ATTACHMENT
    add_motion(copy, "Only in the clone")
    assert titles(copy) == sorted([KEPT, "Only in the clone"])
    assert titles(session(plane, source["domain"], source["password"])) == [KEPT]
    plane.hafen("erase", CLONE, "--yes")
    assert plane.labelled(CLONE) == {"services": set(), "volumes": set(), "secrets": set(), "networks": set()}


def test_an_erased_instance_comes_back_from_its_backup_under_its_name(plane: Plane, source: dict[str, Any],
                                                                      snapshot: dict[str, Any]) -> None:
    plane.hafen("erase", NAME, "--yes")
    assert plane.labelled(NAME)["services"] == set()
    assert snapshot["id"] in [s["id"] for s in snapshots(plane, NAME)]  # listed by the name of the erased one
    restored = plane.json("restore", NAME, snapshot["id"], "--into", NAME)
    assert restored["name"] == NAME and restored["state"] == "running"
    assert restored["password"] != source["password"]  # new secrets, shown once
    client = session(plane, restored["domain"], restored["password"])
    assert titles(client) == [KEPT]
    assert attachment(client) == ATTACHMENT
    old = plane.http(restored["domain"]).post("/apps/users/login/",
                                              json={"username": "admin", "password": source["password"]})
    assert old.status_code == 400
