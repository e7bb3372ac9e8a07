"""A throw-away PostgreSQL server for the tests: its own data directory in a temporary directory, its own
port on 127.0.0.1 and its own socket directory; gone after `stop()`.

Debian's server binaries (/usr/lib/postgresql/N/bin, from the `postgresql` package that
`scripts/bootstrap.sh --test` installs) run as the `postgres` user when the tests run as root, since
initdb refuses root. Durability is off (fsync, synchronous commits): nothing here outlives the run.
Clients log in over TCP as `hafen` with a password, as a control plane on another host would.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from functools import cache
from pathlib import Path

ROLE = "hafen"


def _bindir() -> Path:
    """The server binaries: HAFEN_TEST_PG_BIN, else Debian's newest, else whatever `initdb` PATH finds."""
    if os.environ.get("HAFEN_TEST_PG_BIN"):
        return Path(os.environ["HAFEN_TEST_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("no PostgreSQL server binaries: run scripts/bootstrap.sh --test (installs postgresql)")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self, root: Path, port: int, password: str) -> None:
        self.root = root
        self.port = port
        self.password = password
        self.bindir = _bindir()

    @classmethod
    def start(cls, port: int | None = None) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="hafen-pg-"))
        server = cls(root, port or _free_port(), secrets.token_urlsafe(18))
        try:
            server._init_and_start()
        except BaseException:
            server.stop()
            raise
        return server

    # -- running things as the server's owner ---------------------------------------------------------

    def _as_owner(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=self.root)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} exited {result.returncode}: {result.stderr.strip()} {tail}")
        return result

    def _init_and_start(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        data, run = self.root / "data", self.root / "run"
        self._as_owner(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--no-sync",
                       "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
        self._as_owner("mkdir", str(run))
        options = " ".join([
            f"-p {self.port}", f"-k {run}", "-c listen_addresses=127.0.0.1", "-c fsync=off",
            "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=200",
            "-c shared_buffers=32MB",
        ])
        self._as_owner(str(self.bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                       str(self.root / "server.log"), "-w", "-t", "60", "start")
        self.psql(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{self.password}'")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser, over the socket; return psql's unaligned output."""
        return self._as_owner(str(self.bindir / "psql"), "-h", str(self.root / "run"), "-p", str(self.port),
                              "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt",
                              "-c", sql).stdout

    # -- what the tests use ---------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """A new, empty database owned by the `hafen` role; return its URL (with the password)."""
        self.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._as_owner(str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@cache
def unit_database() -> str:
    """The URL of the unit tier's database, on a server started once per process (tests/unit/conftest.py is
    imported twice when tests import from it) and stopped when the process ends."""
    server = PostgresServer.start()
    atexit.register(server.stop)
    return server.create_database("hafen_unit")
