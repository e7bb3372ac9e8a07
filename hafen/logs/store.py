"""The log store: batched inserts, search by text and fields, retention.

SQLite with an FTS5 index is the embedded default, in its own database file (`logs.sqlite3` in the data
directory), so that log writes never wait on the control plane's database lock. When the control plane's
database is PostgreSQL the lines go there, searched through a GIN index over their `tsvector`.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from hafen.logs.parse import LEVELS, Line

MAX_LIMIT = 5000


@dataclass
class Query:
    """What to search for; `orgs` None: every line (an operator), else only these organisations' lines."""

    text: str = ""
    instance: str = ""
    service: str = ""
    org: str = ""
    level: str = ""  # this level and above
    since: float | None = None
    until: float | None = None
    after_id: int = 0  # a live tail asks for what came after the last line it has
    before_id: int = 0  # and a page further back for what came before
    limit: int = 100
    orgs: frozenset[str] | None = None
    levels: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.levels = LEVELS[LEVELS.index(self.level):] if self.level else ()


@dataclass
class Row:
    id: int
    ts: float
    instance: str
    service: str
    org: str
    level: str
    container: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def fts_phrase(text: str) -> str:
    """A user's text as one FTS5 phrase (its words in order, the last one as a prefix): no query syntax."""
    words = "".join(c if c.isalnum() or c == "_" else " " for c in text).split()
    return '"' + " ".join(words) + '" *' if words else ""


class Store(ABC):
    @abstractmethod
    def insert(self, lines: Sequence[tuple[Line, str]], offsets: dict[str, int] | None = None) -> None:
        """Insert (line, organisation) pairs in one transaction, with the spool offsets they reach."""

    @abstractmethod
    def offsets(self) -> dict[str, int]:
        """How far each spool file has been ingested."""

    @abstractmethod
    def search(self, query: Query) -> list[Row]:
        """Matching lines, newest first."""

    @abstractmethod
    def prune(self, before: float) -> int:
        """Remove lines older than `before`; return how many."""

    @abstractmethod
    def count(self) -> int: ...


class SqliteStore(Store):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS lines (id INTEGER PRIMARY KEY, ts REAL NOT NULL, instance TEXT NOT NULL,
        service TEXT NOT NULL, org TEXT NOT NULL, level TEXT NOT NULL, container TEXT NOT NULL,
        message TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS lines_ts ON lines (ts);
    CREATE INDEX IF NOT EXISTS lines_instance_ts ON lines (instance, ts);
    CREATE VIRTUAL TABLE IF NOT EXISTS lines_fts USING fts5(message, content='lines', content_rowid='id');
    CREATE TRIGGER IF NOT EXISTS lines_ai AFTER INSERT ON lines BEGIN
        INSERT INTO lines_fts (rowid, message) VALUES (new.id, new.message); END;
    CREATE TRIGGER IF NOT EXISTS lines_ad AFTER DELETE ON lines BEGIN
        INSERT INTO lines_fts (lines_fts, rowid, message) VALUES ('delete', old.id, old.message); END;
    CREATE TABLE IF NOT EXISTS spool (file TEXT PRIMARY KEY, offset INTEGER NOT NULL);
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    @property
    def db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(self.SCHEMA)
            self._local.conn = conn
        return conn

    def insert(self, lines: Sequence[tuple[Line, str]], offsets: dict[str, int] | None = None) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO lines (ts, instance, service, org, level, container, message) VALUES (?,?,?,?,?,?,?)",
                [(ln.ts, ln.instance, ln.service, org, ln.level, ln.container, ln.message) for ln, org in lines])
            for name, offset in (offsets or {}).items():
                if offset < 0:
                    db.execute("DELETE FROM spool WHERE file = ?", (name,))
                else:
                    db.execute("INSERT INTO spool (file, offset) VALUES (?, ?) ON CONFLICT (file) DO UPDATE "
                               "SET offset = excluded.offset", (name, offset))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def offsets(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT file, offset FROM spool").fetchall())

    def search(self, query: Query) -> list[Row]:
        where, args = [], []  # type: tuple[list[str], list[Any]]
        table, order = "lines", "lines.id"
        phrase = fts_phrase(query.text)
        if phrase:
            # the index's matches, newest first, as the outer loop (CROSS JOIN keeps it outside): the LIMIT
            # stops the walk early, where sorting every match of a common word took seconds at 10 million
            table, order = "lines_fts CROSS JOIN lines ON lines.id = lines_fts.rowid", "lines_fts.rowid"
            where.append("lines_fts MATCH ?")
            args.append(phrase)
        _filters(query, where, args, "?")
        sql = (f"SELECT lines.id, ts, instance, service, org, level, container, lines.message FROM {table}"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order} DESC LIMIT ?")
        args.append(min(query.limit, MAX_LIMIT))
        return [Row(*r) for r in self.db.execute(sql, args).fetchall()]

    def prune(self, before: float) -> int:
        cur = self.db.execute("DELETE FROM lines WHERE ts < ?", (before,))
        return cur.rowcount

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM lines").fetchone()[0])


def _filters(query: Query, where: list[str], args: list[Any], mark: str) -> None:
    """The conditions besides the text, in the SQL of either store (`mark`: its parameter marker)."""
    for column, value in (("instance", query.instance), ("service", query.service), ("org", query.org)):
        if value:
            where.append(f"{column} = {mark}")
            args.append(value)
    if query.levels:
        where.append(f"level IN ({', '.join([mark] * len(query.levels))})")
        args.extend(query.levels)
    if query.since is not None:
        where.append(f"ts >= {mark}")
        args.append(query.since)
    if query.until is not None:
        where.append(f"ts < {mark}")
        args.append(query.until)
    if query.after_id:
        where.append(f"lines.id > {mark}")
        args.append(query.after_id)
    if query.before_id:
        where.append(f"lines.id < {mark}")
        args.append(query.before_id)
    if query.orgs is not None:  # a customer: its organisations' instances, never hafen's own lines
        orgs = sorted(query.orgs) or [""]
        where.append(f"org IN ({', '.join([mark] * len(orgs))}) AND instance <> ''")
        args.extend(orgs)


class PostgresStore(Store):
    """The lines in the control plane's PostgreSQL database (through Django's connection)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS hafen_log_lines (id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL,
        instance TEXT NOT NULL, service TEXT NOT NULL, org TEXT NOT NULL, level TEXT NOT NULL,
        container TEXT NOT NULL, message TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS hafen_log_lines_ts ON hafen_log_lines (ts);
    CREATE INDEX IF NOT EXISTS hafen_log_lines_instance_ts ON hafen_log_lines (instance, ts);
    CREATE INDEX IF NOT EXISTS hafen_log_lines_fts ON hafen_log_lines
        USING GIN (to_tsvector('simple', message));
    CREATE TABLE IF NOT EXISTS hafen_log_spool (file TEXT PRIMARY KEY, "offset" BIGINT NOT NULL);
    """

    def __init__(self) -> None:
        self._ready = False

    def _cursor(self) -> Any:
        from django.db import connection

        cursor = connection.cursor()
        if not self._ready:
            cursor.execute(self.SCHEMA)
            self._ready = True
        return cursor

    def insert(self, lines: Sequence[tuple[Line, str]], offsets: dict[str, int] | None = None) -> None:
        from django.db import transaction

        with transaction.atomic(), self._cursor() as cursor:
            if lines:
                cursor.executemany(
                    "INSERT INTO hafen_log_lines (ts, instance, service, org, level, container, message) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(ln.ts, ln.instance, ln.service, org, ln.level, ln.container, ln.message.replace("\0", ""))
                     for ln, org in lines])
            for name, offset in (offsets or {}).items():
                if offset < 0:
                    cursor.execute("DELETE FROM hafen_log_spool WHERE file = %s", [name])
                else:
                    cursor.execute('INSERT INTO hafen_log_spool (file, "offset") VALUES (%s, %s) ON CONFLICT (file) '
                                   'DO UPDATE SET "offset" = excluded."offset"', [name, offset])

    def offsets(self) -> dict[str, int]:
        with self._cursor() as cursor:
            cursor.execute('SELECT file, "offset" FROM hafen_log_spool')
            return dict(cursor.fetchall())

    def search(self, query: Query) -> list[Row]:
        where: list[str] = []
        args: list[Any] = []
        words = fts_phrase(query.text).strip('" *')
        if words:
            # the words in order, the last one as a prefix (as in the SQLite store)
            where.append("to_tsvector('simple', message) @@ to_tsquery('simple', %s)")
            args.append(" <-> ".join(f"'{w}'" for w in words.split()) + ":*")
        _filters(query, where, args, "%s")
        sql = ("SELECT lines.id, ts, instance, service, org, level, container, message FROM hafen_log_lines lines"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY lines.id DESC LIMIT %s")
        args.append(min(query.limit, MAX_LIMIT))
        with self._cursor() as cursor:
            cursor.execute(sql, args)
            return [Row(*r) for r in cursor.fetchall()]

    def prune(self, before: float) -> int:
        with self._cursor() as cursor:
            cursor.execute("DELETE FROM hafen_log_lines WHERE ts < %s", [before])
            return int(cursor.rowcount)

    def count(self) -> int:
        with self._cursor() as cursor:
            cursor.execute("SELECT count(*) FROM hafen_log_lines")
            return int(cursor.fetchone()[0])


@cache
def get_store() -> Store:
    """The installation's store: PostgreSQL when the control plane's database is, else SQLite FTS5."""
    from hafen.config import get_settings

    settings = get_settings()
    if settings.database_scheme == "postgresql":
        return PostgresStore()
    return SqliteStore(settings.data_dir / "logs.sqlite3")


def insert_many(store: Store, lines: Iterable[tuple[Line, str]], batch: int = 5000) -> int:
    """Insert in batches of `batch` (a generator of lines need not fit in memory); return how many."""
    total, chunk = 0, []
    for item in lines:
        chunk.append(item)
        if len(chunk) >= batch:
            store.insert(chunk)
            total, chunk = total + len(chunk), []
    if chunk:
        store.insert(chunk)
        total += len(chunk)
    return total
