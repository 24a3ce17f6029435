"""SQLite event store: WAL journal, full fsync on commit, one connection on one dedicated thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from preftrack_gateway.schema import Event, Item
from preftrack_gateway.store.base import (
    CATALOG_VERSION_KEY,
    IMPRESSION_COLUMNS,
    ITEM_COLUMNS,
    ITEM_UPDATE,
    PROBE_KEY,
    USERS_SEQ_KEY,
    Erasure,
    EventStore,
    Forgotten,
    Impression,
    JournalEntry,
    StoreError,
    VersionRecord,
    context_json,
    erasure_from_row,
    event_from_row,
    first_occurrences,
    impression_from_row,
    impression_row,
    item_from_row,
    item_row,
    journal_from_row,
    journal_row,
    query_terms_text,
    tokens_from_text,
    user_tokens_text,
    uuid4_hex,
    version_from_row,
    version_row,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_key TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    value REAL NOT NULL,
    ts REAL NOT NULL,
    recommendation_id TEXT,
    context TEXT,
    query_terms TEXT,
    committed_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    categories TEXT NOT NULL,
    price REAL NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    attributes TEXT NOT NULL DEFAULT '[]',
    stock INTEGER
);
CREATE TABLE IF NOT EXISTS users (
    user_key TEXT PRIMARY KEY,
    tokens TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS impressions (
    recommendation_id TEXT PRIMARY KEY,
    user_key TEXT NOT NULL,
    item_ids TEXT NOT NULL,
    scores TEXT NOT NULL,
    model_version TEXT NOT NULL,
    ts REAL NOT NULL,
    arm TEXT NOT NULL DEFAULT 'stable'
);
CREATE TABLE IF NOT EXISTS model_versions (
    version INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    parent INTEGER,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS version_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS version_journal_version ON version_journal (version, seq);
CREATE INDEX IF NOT EXISTS events_user_time ON events (user_key, ts);
CREATE INDEX IF NOT EXISTS events_time ON events (ts);
CREATE TABLE IF NOT EXISTS identities (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_key TEXT NOT NULL UNIQUE,
    user_key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS identities_user ON identities (user_key);
CREATE TABLE IF NOT EXISTS erasures (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket TEXT NOT NULL UNIQUE,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    events_deleted INTEGER NOT NULL,
    impressions_deleted INTEGER NOT NULL
);
"""

_JOURNAL_INSERT = "INSERT INTO version_journal (version, kind, at, actor, message, details) VALUES (?, ?, ?, ?, ?, ?)"
_ERASURE_COLUMNS = "ticket, at, actor, events_deleted, impressions_deleted"
_EVENT_COLUMNS = "event_id, user_key, item_id, event_type, value, ts, recommendation_id, context, query_terms"


#: Columns added since the first release: (table, column, definition). Stores made before get them at open.
_ADDED_COLUMNS = (
    ("impressions", "arm", "TEXT NOT NULL DEFAULT 'stable'"),
    ("events", "query_terms", "TEXT"),
    ("items", "title", "TEXT NOT NULL DEFAULT ''"),
    ("items", "attributes", "TEXT NOT NULL DEFAULT '[]'"),
    ("impressions", "query_terms", "TEXT"),
    ("users", "seq", "INTEGER NOT NULL DEFAULT 0"),
    ("items", "stock", "INTEGER"),
    ("impressions", "propensities", "TEXT"),
)


def _migrate(db: sqlite3.Connection) -> None:
    """Add the missing columns in one transaction (another process may be opening the same store)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, column, definition in _ADDED_COLUMNS:
            if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        # Here, not in the schema: an older users table has no seq column until the loop above adds it.
        db.execute("CREATE INDEX IF NOT EXISTS users_seq ON users (seq)")
        # Rows written before users were numbered: number them, so that readers following users_changed get them.
        legacy = [r[0] for r in db.execute("SELECT user_key FROM users WHERE seq = 0 ORDER BY user_key")]
        if legacy:
            last = _claim_users_seqs(db, len(legacy))
            db.executemany("UPDATE users SET seq = ? WHERE user_key = ?", enumerate(legacy, start=last + 1))
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back what is open, if anything is: SQLite ends some failed transactions itself (a full disk), and a
    ROLLBACK then would raise and hide the cause."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def store_error(exc: sqlite3.Error, path: str) -> StoreError:
    """A SQLite failure as a :class:`StoreError` whose message says what is wrong with the file and what to do.

    >>> store_error(sqlite3.OperationalError("database or disk is full"), "/var/x.db").full
    True
    """
    text = str(exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return StoreError(
            f"SQLite: the disk holding {path} is full ({text}): free space there; it recovers by itself",
            retry_after_s=5.0,
            full=True,
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return StoreError(
            f"SQLite: {path} cannot be written ({text}): make the file, its folder and their mount writable by "
            "the gateway's user",
            retry_after_s=5.0,
        )
    if name.startswith("SQLITE_BUSY") or "locked" in text:
        return StoreError(
            f"SQLite: {path} is locked by another process ({text}): SQLite serves one gateway process; stop the "
            "other writer, or use PostgreSQL for several",
        )
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        return StoreError(
            f"SQLite: cannot read or write {path} ({text}): check the disk and the file", retry_after_s=5.0
        )
    return StoreError(f"SQLite: {text}")


def _claim_users_seqs(db: sqlite3.Connection, count: int) -> int:
    """Reserve ``count`` users sequence numbers; returns the number before the first. Call in a write transaction:
    it serialises writers, so numbers increase in commit order."""
    row = db.execute(
        "SELECT max((SELECT coalesce(max(seq), 0) FROM users), "
        "(SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM settings WHERE key = ?))",
        (USERS_SEQ_KEY,),
    ).fetchone()
    last = int(row[0])
    db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (USERS_SEQ_KEY, str(last + count)))
    return last


class SQLiteStore(EventStore):
    """The embedded default store. Safe for one gateway process; use PostgreSQL for several replicas."""

    def __init__(
        self, connection: sqlite3.Connection, executor: concurrent.futures.ThreadPoolExecutor, path: str = ""
    ) -> None:
        self._db = connection
        self._executor = executor
        self._path = path

    @classmethod
    async def open(cls, path: str) -> SQLiteStore:
        """Open or create the database file at ``path``."""
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")

        def connect() -> sqlite3.Connection:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so an acknowledged event survives a power cut.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA secure_delete=ON")  # deleted rows (a forgotten user's) are overwritten, not left
            db.executescript(_SCHEMA)
            _migrate(db)
            return db

        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except sqlite3.Error as exc:
            executor.shutdown()
            raise StoreError(f"cannot open SQLite database: {store_error(exc, path)}") from exc
        return cls(db, executor, path)

    def _fetchall(self, query: str, params: tuple[object, ...]) -> list[Any]:
        return self._db.execute(query, params).fetchall()

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise store_error(exc, self._path) from exc

    async def probe(self, *, write: bool = False) -> None:
        if not write:  # nothing to look at between writes: the file is local and every commit reports itself
            return

        def touch() -> None:
            # A real commit (one settings row): a full disk or a read-only file fails here as an append would.
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (PROBE_KEY, repr(time.time())))
                self._db.execute("COMMIT")
            except BaseException:
                _rollback(self._db)
                raise

        await self._run(touch)

    async def append_logged(self, events: Sequence[Event]) -> tuple[list[bool], int]:
        firsts = first_occurrences(events)

        def write() -> tuple[list[bool], int]:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                candidates = [e for e, first in zip(events, firsts, strict=True) if first]
                existing: set[str] = set()
                ids = [e.event_id for e in candidates]
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    existing.update(
                        r[0] for r in db.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
                    )
                new = [e for e in candidates if e.event_id not in existing]
                db.executemany(
                    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            e.event_id,
                            e.user_id,
                            e.item_id,
                            e.event_type,
                            e.value,
                            e.timestamp_s,
                            e.recommendation_id,
                            context_json(e),
                            query_terms_text(e.query_terms),
                        )
                        for e in new
                    ],
                )
                # One writer at a time (BEGIN IMMEDIATE): sequence numbers increase in commit order.
                last = int(db.execute("SELECT last_insert_rowid()").fetchone()[0]) if new else 0
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            return [first and e.event_id not in existing for e, first in zip(events, firsts, strict=True)], last

        return await self._run(write)

    async def upsert_items(self, items: Sequence[Item]) -> None:
        def write() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    f"INSERT INTO items ({ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(item_id) DO UPDATE SET "
                    f"{ITEM_UPDATE}",
                    [item_row(i) for i in items],
                )
                self._db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (CATALOG_VERSION_KEY, uuid4_hex()))

        await self._run(write)

    async def items(self) -> list[Item]:
        rows = await self._run(lambda: self._db.execute(f"SELECT {ITEM_COLUMNS} FROM items").fetchall())
        return [item_from_row(r) for r in rows]

    async def upsert_users(self, users: Sequence[tuple[str, tuple[str, ...]]]) -> None:
        rows = [(user_key, user_tokens_text(tokens)) for user_key, tokens in users]

        def write() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                last = _claim_users_seqs(self._db, len(rows))
                self._db.executemany(
                    "INSERT INTO users (user_key, tokens, seq) VALUES (?, ?, ?) "
                    "ON CONFLICT(user_key) DO UPDATE SET tokens = excluded.tokens, seq = excluded.seq",
                    [(user_key, tokens, seq) for seq, (user_key, tokens) in enumerate(rows, start=last + 1)],
                )

        await self._run(write)

    async def users_changed(self, *, after_seq: int = 0) -> tuple[list[tuple[str, tuple[str, ...]]], int]:
        rows = await self._run(
            functools.partial(
                self._fetchall, "SELECT user_key, tokens, seq FROM users WHERE seq > ? ORDER BY seq", (after_seq,)
            )
        )
        changed = [(str(r[0]), tokens_from_text(r[1])) for r in rows]
        return changed, int(rows[-1][2]) if rows else after_seq

    async def log_impressions(self, impressions: Sequence[Impression]) -> None:
        def write() -> None:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    f"INSERT OR IGNORE INTO impressions ({IMPRESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [impression_row(i) for i in impressions],
                )

        await self._run(write)

    async def impressions_after(self, after_s: float, *, limit: int = 100_000) -> list[Impression]:
        rows = await self._run(
            lambda: self._db.execute(
                f"SELECT {IMPRESSION_COLUMNS} FROM impressions WHERE ts > ? ORDER BY ts LIMIT ?", (after_s, limit)
            ).fetchall()
        )
        return [impression_from_row(r) for r in rows]

    async def impression(self, recommendation_id: str) -> Impression | None:
        row = await self._run(
            lambda: self._db.execute(
                f"SELECT {IMPRESSION_COLUMNS} FROM impressions WHERE recommendation_id = ?", (recommendation_id,)
            ).fetchone()
        )
        if row is None:
            return None
        return impression_from_row(row)

    async def events(self, *, after_seq: int = 0, batch_size: int = 10_000) -> AsyncIterator[list[tuple[int, Event]]]:
        last = after_seq
        while True:
            query = f"SELECT seq, {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
            rows: list[Any] = await self._run(functools.partial(self._fetchall, query, (last, batch_size)))
            if not rows:
                return
            yield [(int(r[0]), event_from_row(r[1:])) for r in rows]
            last = int(rows[-1][0])

    async def user_events(self, user_key: str, *, before_s: float, limit: int = 10_000) -> list[Event]:
        rows = await self._run(
            lambda: self._fetchall(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_key = ? AND ts < ? "
                "ORDER BY ts DESC, event_id DESC LIMIT ?",
                (user_key, before_s, limit),
            )
        )
        return [event_from_row(r) for r in reversed(rows)]

    async def engagement(self, start_s: float, end_s: float) -> list[tuple[str, str, int]]:
        rows = await self._run(
            lambda: self._fetchall(
                "SELECT item_id, event_type, count(*) FROM events WHERE ts >= ? AND ts < ? AND event_type != 'search' "
                "GROUP BY item_id, event_type",
                (start_s, end_s),
            )
        )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    async def last_seq(self) -> int:
        row = await self._run(lambda: self._db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone())
        return int(row[0])

    async def count_events(self) -> int:
        return int((await self._run(lambda: self._db.execute("SELECT count(*) FROM events").fetchone()))[0])

    async def has_event(self, event_id: str) -> bool:
        row = await self._run(
            lambda: self._db.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone()
        )
        return row is not None

    async def committed_at(self, seqs: Sequence[int]) -> dict[int, float]:
        def read() -> dict[int, float]:
            out: dict[int, float] = {}
            for start in range(0, len(seqs), 500):
                chunk = list(seqs[start : start + 500])
                marks = ",".join("?" * len(chunk))
                out.update(self._db.execute(f"SELECT seq, committed_at FROM events WHERE seq IN ({marks})", chunk))
            return out

        return await self._run(read)

    async def put_version(self, record: VersionRecord) -> None:
        def write() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT OR REPLACE INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", version_row(record)
                )

        await self._run(write)

    async def versions(self) -> list[VersionRecord]:
        rows = await self._run(lambda: self._db.execute("SELECT * FROM model_versions ORDER BY version").fetchall())
        return [version_from_row(r) for r in rows]

    async def transition_versions(
        self,
        moves: Sequence[tuple[VersionRecord, tuple[str, ...] | None]],
        entries: Sequence[JournalEntry],
        *,
        single: str | None = None,
    ) -> bool:
        def write() -> bool:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for record, expected in moves:
                    row = self._db.execute(
                        "SELECT state FROM model_versions WHERE version = ?", (record.version,)
                    ).fetchone()
                    if (row is not None) if expected is None else (row is None or row[0] not in expected):
                        return False
                if single is not None:
                    others = self._db.execute(
                        "SELECT version FROM model_versions WHERE state = ?", (single,)
                    ).fetchall()
                    if {int(r[0]) for r in others} - {record.version for record, _ in moves}:
                        return False
                self._db.executemany(
                    "INSERT OR REPLACE INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [version_row(record) for record, _ in moves],
                )
                self._db.executemany(_JOURNAL_INSERT, [journal_row(e) for e in entries])
                return True

        return await self._run(write)

    async def append_journal(self, entries: Sequence[JournalEntry]) -> None:
        def write() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(_JOURNAL_INSERT, [journal_row(e) for e in entries])

        await self._run(write)

    async def journal(
        self,
        *,
        version: int | None = None,
        kind: str | None = None,
        after_seq: int = 0,
        limit: int = 10_000,
        newest: bool = False,
    ) -> list[JournalEntry]:
        order = "DESC" if newest else "ASC"
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT * FROM version_journal WHERE seq > ? AND (? IS NULL OR version = ?) "
                f"AND (? IS NULL OR kind = ?) ORDER BY seq {order} LIMIT ?",
                (after_seq, version, version, kind, kind, limit),
            ).fetchall()
        )
        return sorted((journal_from_row(r) for r in rows), key=lambda e: e.seq)

    async def get_setting(self, key: str) -> str | None:
        row = await self._run(lambda: self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone())
        return None if row is None else str(row[0])

    async def put_setting(self, key: str, value: str) -> None:
        def write() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

        await self._run(write)

    async def put_setting_if_absent(self, key: str, value: str) -> str:
        def write() -> str:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (key, value))
                return str(self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()[0])

        return await self._run(write)

    async def merge_session(self, session_key: str, user_key: str, *, at: float) -> tuple[bool, str]:
        def write() -> tuple[bool, str]:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                added = self._db.execute(
                    "INSERT INTO identities (session_key, user_key, at) VALUES (?, ?, ?) "
                    "ON CONFLICT (session_key) DO NOTHING",
                    (session_key, user_key, at),
                ).rowcount
                row = self._db.execute("SELECT user_key FROM identities WHERE session_key = ?", (session_key,))
                return bool(added), str(row.fetchone()[0])

        return await self._run(write)

    async def identities(self, *, after_seq: int = 0) -> list[tuple[int, str, str]]:
        rows = await self._run(
            functools.partial(
                self._fetchall,
                "SELECT seq, session_key, user_key FROM identities WHERE seq > ? ORDER BY seq",
                (after_seq,),
            )
        )
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def key_events(self, user_key: str, *, up_to_seq: int) -> list[tuple[int, Event]]:
        rows = await self._run(
            functools.partial(
                self._fetchall,
                f"SELECT seq, {_EVENT_COLUMNS} FROM events WHERE user_key = ? AND seq <= ? ORDER BY seq",
                (user_key, up_to_seq),
            )
        )
        return [(int(r[0]), event_from_row(r[1:])) for r in rows]

    async def forget_user(self, user_key: str, *, ticket: str, at: float, actor: str) -> Forgotten:
        def write() -> Forgotten:
            db = self._db
            with db:
                db.execute("BEGIN IMMEDIATE")
                # The user's own key and every anonymous session merged into it.
                keys = [user_key] + [
                    str(r[0]) for r in db.execute("SELECT session_key FROM identities WHERE user_key = ?", (user_key,))
                ]
                marks = ", ".join("?" * len(keys))
                rows = db.execute(
                    f"DELETE FROM events WHERE user_key IN ({marks}) RETURNING seq, {_EVENT_COLUMNS}", keys
                )
                events = [(int(r[0]), event_from_row(r[1:])) for r in rows.fetchall()]
                lists = db.execute(f"DELETE FROM impressions WHERE user_key IN ({marks}) RETURNING item_ids", keys)
                served = [json.loads(ids) for (ids,) in lists.fetchall()]
                db.execute("DELETE FROM identities WHERE user_key = ?", (user_key,))
                users_deleted = int(db.execute("DELETE FROM users WHERE user_key = ?", (user_key,)).rowcount)
                row = db.execute(
                    f"INSERT INTO erasures ({_ERASURE_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
                    f"RETURNING seq, {_ERASURE_COLUMNS}",
                    (ticket, at, actor, len(events), len(served)),
                ).fetchone()
            # Old page images of the deleted rows may still sit in the write-ahead log: move it into the (securely
            # deleted) database file and empty it. Best effort: a reader in another process can hold it open.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return Forgotten(erasure_from_row(row), events, [i for ids in served for i in ids], users_deleted)

        return await self._run(write)

    async def erasures(self, *, after_seq: int = 0, limit: int = 1000) -> list[Erasure]:
        rows = await self._run(
            functools.partial(
                self._fetchall,
                f"SELECT seq, {_ERASURE_COLUMNS} FROM erasures WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
        )
        return [erasure_from_row(r) for r in rows]

    async def last_erasure_seq(self) -> int:
        row = await self._run(lambda: self._db.execute("SELECT coalesce(max(seq), 0) FROM erasures").fetchone())
        return int(row[0])

    async def delete_events_before(self, before_s: float, *, limit: int = 100_000) -> int:
        def write() -> int:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                deleted = self._db.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < ? LIMIT ?)", (before_s, limit)
                ).rowcount
                lists = self._db.execute(
                    "DELETE FROM impressions WHERE recommendation_id IN "
                    "(SELECT recommendation_id FROM impressions WHERE ts < ? LIMIT ?)",
                    (before_s, limit),
                ).rowcount
                return int(deleted) + int(lists)

        return await self._run(write)

    async def close(self) -> None:
        await self._run(self._db.close)
        self._executor.shutdown(wait=True)
