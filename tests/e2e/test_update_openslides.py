"""An OpenSlides 3.2 instance with a motion, updated to 3.3 through the CLI: the backup, the migration of
3.2's schema by 3.3's setup job, the new version checked, then traffic; the motion is still there."""

from __future__ import annotations

import pytest

from tests.conftest import Plane
from tests.openslides import add_motion, login, titles

pytestmark = pytest.mark.e2e

NAME = "oup"


def test_openslides_3_2_is_updated_to_3_3_with_its_motion(plane: Plane) -> None:
    data = plane.create(NAME, "openslides", "--version", "3.2")
    try:
        client = login(plane.http(data["domain"]), data["password"])
        assert client.get("/apps/core/version/").json()["openslides_version"].startswith("3.2")
        add_motion(client, "Made on 3.2")
        assert "3.3" in plane.json("show", NAME)["update"]["versions"]

        updated = plane.json("update", NAME, "--version", "3.3")
        assert updated["state"] == "succeeded" and updated["update"]["plan"] == "migrating", updated["error"]

        client = login(plane.http(data["domain"]), data["password"])
        assert client.get("/apps/core/version/").json()["openslides_version"].startswith("3.3")
        assert titles(client) == ["Made on 3.2"]
        shown = plane.json("show", NAME)
        assert shown["version"] == "3.3" and shown["state"] == "running"
        assert [b["version"] for b in plane.json("backups", NAME)["items"] if b["reason"] == "update"] == ["3.2"]
    finally:
        plane.hafen("erase", NAME, "--yes", check=False)
