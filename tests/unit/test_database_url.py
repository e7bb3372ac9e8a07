"""HAFEN_DATABASE_URL: SQLite stays the default, PostgreSQL by URL, anything else is one clear line; the
password of a URL is never shown. And a NUL character (which PostgreSQL's text cannot hold) is refused at
the door, not as a server error."""

import os
import subprocess
import sys

import pytest
from django.test import Client

from hafen.config import Settings
from hafen.errors import Conflict, InvalidInput

SECRET = "s3cr3t-Pa55"


def test_unset_is_sqlite_in_the_data_directory_as_before(tmp_path):
    config = Settings(data_dir=tmp_path, database_url="").django_database()
    assert config == {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(tmp_path / "hafen.sqlite3"),
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
    }


def test_a_sqlite_url_puts_sqlite_elsewhere_with_the_same_options(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/elsewhere.db")
    config = settings.django_database()
    assert (config["ENGINE"], config["NAME"]) == ("django.db.backends.sqlite3", f"{tmp_path}/elsewhere.db")
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert settings.database_display == f"SQLite {tmp_path}/elsewhere.db"
    assert Settings(data_dir=tmp_path, database_url="").database_display == f"SQLite {tmp_path}/hafen.sqlite3"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url(tmp_path, scheme):
    settings = Settings(data_dir=tmp_path, database_url=f"{scheme}://hafen:{SECRET}@db.example:6432/plane")
    config = settings.django_database()
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"], config["USER"], config["PASSWORD"]) == (
        "db.example", 6432, "plane", "hafen", SECRET)
    assert config["CONN_HEALTH_CHECKS"] is True
    assert settings.database_display == "PostgreSQL postgresql://hafen@db.example:6432/plane".replace(
        "postgresql://", f"{scheme}://")
    assert SECRET not in settings.database_display


@pytest.mark.parametrize("url", [f"mysql://root:{SECRET}@db/hafen", f"root:{SECRET}@db/hafen", "oracle://x"])
def test_another_database_is_refused_without_repeating_the_url(tmp_path, url):
    with pytest.raises(InvalidInput) as caught:
        Settings(data_dir=tmp_path, database_url=url).django_database()
    assert "HAFEN_DATABASE_URL must start with postgresql:// or sqlite://" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_cli_says_so_in_one_line(tmp_path):
    env = {**os.environ, "HAFEN_ENGINE": "fake", "HAFEN_DATA_DIR": str(tmp_path),
           "HAFEN_DATABASE_URL": f"mysql://root:{SECRET}@db/hafen"}
    result = subprocess.run([sys.executable, "-m", "hafen", "list"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["error: HAFEN_DATABASE_URL must start with postgresql:// or sqlite:// "
                                          "(got mysql://)"]


def test_a_database_that_does_not_answer_is_one_line_without_the_password(tmp_path):
    env = {**os.environ, "HAFEN_ENGINE": "fake", "HAFEN_DATA_DIR": str(tmp_path),
           "HAFEN_DATABASE_URL": f"postgresql://hafen:{SECRET}@127.0.0.1:9/hafen"}
    result = subprocess.run([sys.executable, "-m", "hafen", "list"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 5
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: the control plane's database does not answer (PostgreSQL "
                               "postgresql://hafen@127.0.0.1:9/hafen): ")
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("path", ["/api/v1/instances?q=a%00b", "/api/v1/instances/a%00b", "/instances/a%00b/"])
def test_a_nul_in_path_or_query_is_a_400(people, path):
    client = Client()
    client.force_login(people.users["operator"])
    response = client.get(path)
    assert response.status_code == 400
    if path.startswith("/api/"):
        assert response.json()["error"]["code"] == "invalid"


def test_a_nul_in_a_json_body_is_a_400(people):
    response = Client().post("/api/v1/instances/eve/locks", {"actions": ["stop"], "reason": "why\u0000not"},
                             content_type="application/json", **people.headers("operator"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_one_controller_per_postgresql_database(settings):
    from hafen.controller import process

    if settings.database_scheme != "postgresql":
        assert process.database_lock(settings) is None
        return
    first = process.database_lock(settings)
    try:
        with pytest.raises(Conflict, match="another control plane runs against this database"):
            process.database_lock(settings)
    finally:
        first.close()
    process.database_lock(settings).close()  # free again once the first has gone
