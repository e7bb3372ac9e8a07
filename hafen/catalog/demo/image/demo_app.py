"""The demo app: a small web service backed by PostgreSQL and Redis.

`demo_app.py setup` is the one-off job (create the schema, set the admin
password from its secret); `demo_app.py serve` is the web service. Endpoints:
GET /health, POST /login (JSON username and password), GET and POST /notes
(needs a login), GET and PUT /files/NAME (a file in the media volume, needs a
login), GET / (a page that says which instance this is), GET /ws (a websocket that stays open, silent,
until the client closes it: what a browser tab of OpenSlides keeps).
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2
import redis

ADMIN = "admin"
MEDIA = Path(os.environ.get("MEDIA_DIR", "/data/media"))


def _secret(name: str) -> str:
    return Path("/run/secrets", name).read_text().strip()


def _db():
    return psycopg2.connect(
        host=os.environ.get("DB_HOST", "db"),
        dbname=os.environ.get("DB_NAME", "demo"),
        user=os.environ.get("DB_USER", "demo"),
        password=_secret("db_password"),
        connect_timeout=3,
    )


def _cache() -> "redis.Redis":
    return redis.Redis(host=os.environ.get("REDIS_HOST", "redis"), socket_timeout=2)


def _hash(password: str, salt: bytes) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000).hex()


VERSION = os.environ.get("DEMO_VERSION", "1.0")
# A build that fails on purpose (the tests' catalogue): "migration" (its setup job fails half-way through
# its migration) or "web" (its web service exits at start).
BREAK = os.environ.get("DEMO_BREAK", "")


def _major(version: str) -> int:
    return int(version.split(".")[0])


def migrate(cur) -> None:
    """Version 2 keeps the time of each note: a schema change, as an update from 1.x makes."""
    if _major(VERSION) >= 2:
        cur.execute("ALTER TABLE notes ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now()")
    cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version text NOT NULL)")
    cur.execute("DELETE FROM schema_version")
    cur.execute("INSERT INTO schema_version VALUES (%s)", (VERSION,))


def setup() -> None:
    salt = secrets.token_bytes(16)
    with _db() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS users (name text PRIMARY KEY, salt bytea, hash text)")
        cur.execute("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)")
        migrate(cur)
    if BREAK == "migration":
        with _db() as conn, conn.cursor() as cur:  # committed: only a restore undoes it
            cur.execute("DELETE FROM notes")
        time.sleep(8)  # a migration takes time: a test can stop the controller while it runs
        sys.exit("setup: migration failed half-way (a build broken on purpose)")
    with _db() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO users (name, salt, hash) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET salt = EXCLUDED.salt, hash = EXCLUDED.hash",
            (ADMIN, salt, _hash(_secret("admin_password"), salt)),
        )
    print("setup: schema ready, admin password set", flush=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "hafen-demo"

    def _send(self, status: int, body: object, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return {}

    def _logged_in(self) -> bool:
        cookie = self.headers.get("Cookie", "")
        for part in cookie.split(";"):
            key, _, value = part.strip().partition("=")
            if key == "demo_session" and value:
                return bool(_cache().exists(f"session:{value}"))
        return False

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            with _db() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
            _cache().ping()
            self._send(200, {"app": "demo", "version": VERSION})
        elif self.path == "/notes":
            if not self._logged_in():
                self._send(403, {"detail": "login required"})
                return
            with _db() as conn, conn.cursor() as cur:
                cur.execute("SELECT id, body FROM notes ORDER BY id")
                rows = [{"id": i, "body": b} for i, b in cur.fetchall()]
            self._send(200, rows)
        elif self.path.startswith("/files/"):
            if not self._logged_in():
                self._send(403, {"detail": "login required"})
                return
            path = self._media_path()
            if path is None or not path.is_file():
                self._send(404, {"detail": "no such file"})
                return
            self._send(200, path.read_text(), "text/plain; charset=utf-8")
        elif self.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
        elif self.path == "/":
            name = os.environ.get("INSTANCE_NAME", "")
            page = f"<!doctype html><title>demo {name}</title><h1>demo instance {name}</h1><p>{socket.gethostname()}</p>"
            self._send(200, page, "text/html; charset=utf-8")
        else:
            self._send(404, {"detail": "not found"})

    def _websocket(self) -> None:
        """RFC 6455's handshake, then the connection is held until the client closes it."""
        key = self.headers.get("Sec-WebSocket-Key", "") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.protocol_version = "HTTP/1.1"  # an upgrade is HTTP/1.1's (this server answers 1.0 otherwise)
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
        self.end_headers()
        self.wfile.flush()
        while self.rfile.read(1024):  # whatever the client sends is not read as frames; its EOF ends it
            pass
        self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802
        if self.path == "/login":
            body = self._json()
            with _db() as conn, conn.cursor() as cur:
                cur.execute("SELECT salt, hash FROM users WHERE name = %s", (body.get("username"),))
                row = cur.fetchone()
            password = str(body.get("password", ""))
            if row is None or not hmac.compare_digest(_hash(password, bytes(row[0])), row[1]):
                self._send(403, {"detail": "username or password is not correct"})
                return
            token = secrets.token_hex(16)
            _cache().setex(f"session:{token}", 3600, body["username"])
            self.send_response(200)
            self.send_header("Set-Cookie", f"demo_session={token}; Path=/; HttpOnly")
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"user": body["username"]}).encode())
        elif self.path == "/notes":
            if not self._logged_in():
                self._send(403, {"detail": "login required"})
                return
            note = str(self._json().get("body", ""))
            with _db() as conn, conn.cursor() as cur:
                cur.execute("INSERT INTO notes (body) VALUES (%s) RETURNING id", (note,))
                note_id = cur.fetchone()[0]
            self._send(201, {"id": note_id, "body": note})
        else:
            self._send(404, {"detail": "not found"})

    def do_PUT(self) -> None:  # noqa: N802
        path = self._media_path() if self.path.startswith("/files/") else None
        if path is None:
            self._send(404, {"detail": "not found"})
            return
        if not self._logged_in():
            self._send(403, {"detail": "login required"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        path.write_bytes(self.rfile.read(length))
        self._send(201, {"name": path.name, "bytes": length})

    def _media_path(self) -> "Path | None":
        name = self.path.removeprefix("/files/")
        if not name or "/" in name or name.startswith("."):
            return None
        return MEDIA / name

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


def serve() -> None:
    if BREAK == "web":
        sys.exit("serve: this build does not start (broken on purpose)")
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()


if __name__ == "__main__":
    {"setup": setup, "serve": serve}[sys.argv[1]]()
