"""PostgreSQL event store (psycopg 3, async): the scale-out backend several gateway replicas can share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence

import psycopg

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
from preftrack_gateway.store.pg_link import PgLink, describe

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    user_key TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    recommendation_id TEXT,
    context TEXT,
    query_terms TEXT,
    committed_at DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    categories TEXT NOT NULL,
    price DOUBLE PRECISION NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    attributes TEXT NOT NULL DEFAULT '[]',
    stock BIGINT
);
CREATE TABLE IF NOT EXISTS users (
    user_key TEXT PRIMARY KEY,
    tokens TEXT NOT NULL,
    seq BIGINT NOT NULL DEFAULT 0
);
ALTER TABLE users ADD COLUMN IF NOT EXISTS seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS users_seq ON users (seq);
CREATE TABLE IF NOT EXISTS impressions (
    recommendation_id TEXT PRIMARY KEY,
    user_key TEXT NOT NULL,
    item_ids TEXT NOT NULL,
    scores TEXT NOT NULL,
    model_version TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL
);
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS arm TEXT NOT NULL DEFAULT 'stable';
CREATE TABLE IF NOT EXISTS model_versions (
    version BIGINT PRIMARY KEY,
    state TEXT NOT NULL,
    parent BIGINT,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    metrics TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS version_journal (
    seq BIGSERIAL PRIMARY KEY,
    version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS version_journal_version ON version_journal (version, seq);
CREATE INDEX IF NOT EXISTS events_user_time ON events (user_key, ts);
CREATE INDEX IF NOT EXISTS events_time ON events (ts);
ALTER TABLE events ADD COLUMN IF NOT EXISTS query_terms TEXT;
ALTER TABLE items ADD COLUMN IF NOT EXISTS title TEXT NOT NULL DEFAULT '';
ALTER TABLE items ADD COLUMN IF NOT EXISTS attributes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE items ADD COLUMN IF NOT EXISTS stock BIGINT;
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS query_terms TEXT;
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS propensities TEXT;
CREATE TABLE IF NOT EXISTS identities (
    seq BIGSERIAL PRIMARY KEY,
    session_key TEXT NOT NULL UNIQUE,
    user_key TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS identities_user ON identities (user_key);
CREATE TABLE IF NOT EXISTS erasures (
    seq BIGSERIAL PRIMARY KEY,
    ticket TEXT NOT NULL UNIQUE,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    events_deleted BIGINT NOT NULL,
    impressions_deleted BIGINT NOT NULL
);
"""

_JOURNAL_INSERT = (
    "INSERT INTO version_journal (version, kind, at, actor, message, details) VALUES (%s, %s, %s, %s, %s, %s)"
)
_NINE = ", ".join(["%s"] * 9)
#: The advisory lock that orders appends ("preftrack" in ASCII).
_APPEND_LOCK = 0x7072656674726163
#: The advisory lock that orders users' upserts ("pt.users" in ASCII).
_USERS_LOCK = 0x70742E7573657273
#: The advisory lock that makes creating the tables one process at a time ("pt.schem" in ASCII).
_SCHEMA_LOCK = 0x70742E736368656D
_ERASURE_COLUMNS = "ticket, at, actor, events_deleted, impressions_deleted"
_EVENT_COLUMNS = "event_id, user_key, item_id, event_type, value, ts, recommendation_id, context, query_terms"


async def _claim_users_seqs(connection: psycopg.AsyncConnection, count: int) -> int:
    """Reserve ``count`` users sequence numbers; returns the number before the first. Call in a transaction that
    holds ``_USERS_LOCK``."""
    cursor = await connection.execute(
        "SELECT greatest((SELECT coalesce(max(seq), 0) FROM users), "
        "(SELECT coalesce(max(value::bigint), 0) FROM settings WHERE key = %s))",
        (USERS_SEQ_KEY,),
    )
    row = await cursor.fetchone()
    assert row is not None
    last = int(row[0])
    await connection.execute(
        "INSERT INTO settings VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (USERS_SEQ_KEY, str(last + count)),
    )
    return last


class _LostRaceError(Exception):
    """Another process moved a version first: roll the transaction back."""


class PostgresStore(EventStore):
    """Events, items and impressions in PostgreSQL. Writes use one connection; reads another. Each reconnects by
    itself after the server went away (:class:`PgLink`); a call that meets a lost connection fails with
    :class:`StoreError` and nothing of it is committed."""

    def __init__(self, writer: PgLink, reader: PgLink) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Connect to ``url`` and create the tables if needed."""
        store = cls(PgLink(url, "writer"), PgLink(url, "reader"))
        try:
            async with store._writing() as writer:
                # One process at a time: CREATE ... IF NOT EXISTS run at once by several (a new deployment's
                # gateways and trainer starting together) can fail on PostgreSQL's catalogue unique keys.
                await writer.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                await writer.execute(_SCHEMA)
            async with store._writing() as writer:
                # Rows written before users were numbered: number them (as an upsert would, under its lock), so
                # that readers following users_changed get them.
                await writer.execute("SELECT pg_advisory_xact_lock(%s)", (_USERS_LOCK,))
                cursor = await writer.execute("SELECT count(*) FROM users WHERE seq = 0")
                legacy = await cursor.fetchone()
                if legacy is not None and legacy[0]:
                    last = await _claim_users_seqs(writer, int(legacy[0]))
                    await writer.execute(
                        "UPDATE users SET seq = numbered.seq FROM (SELECT user_key, "
                        "%s + row_number() OVER (ORDER BY user_key) AS seq FROM users WHERE seq = 0) AS numbered "
                        "WHERE users.user_key = numbered.user_key",
                        (last,),
                    )
            await store._reader.connect()
        except StoreError as exc:
            await store.close()
            raise StoreError(f"cannot open PostgreSQL store: {exc}") from exc
        return store

    @contextlib.asynccontextmanager
    async def _writing(self, *, transaction: bool = True) -> AsyncIterator[psycopg.AsyncConnection]:
        """The writer connection, alone (and in a transaction unless told otherwise); a PostgreSQL failure inside
        becomes :class:`StoreError`."""
        async with self._write_lock:
            try:
                connection = await self._writer.connect()
                if transaction:
                    async with connection.transaction():
                        yield connection
                else:
                    yield connection
            except psycopg.Error as exc:
                raise StoreError(describe(exc)) from exc

    async def probe(self, *, write: bool = False) -> None:
        # On the writer connection: a lost server shows here within one health interval even with no traffic.
        async with self._writing(transaction=False) as writer:
            if write:  # a real commit, one settings row
                await writer.execute(
                    "INSERT INTO settings VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (PROBE_KEY, repr(time.time())),
                )
            else:
                await writer.execute("SELECT 1")

    async def append_logged(self, events: Sequence[Event]) -> tuple[list[bool], int]:
        firsts = first_occurrences(events)
        candidates = [e for e, first in zip(events, firsts, strict=True) if first]
        columns: list[list[object]] = [[] for _ in range(9)]
        for e in candidates:
            row = (e.event_id, e.user_id, e.item_id, e.event_type, e.value, e.timestamp_s, e.recommendation_id)
            for column, value in zip(columns, (*row, context_json(e), query_terms_text(e.query_terms)), strict=True):
                column.append(value)
        async with self._writing() as writer:
            # Appends commit one at a time (the lock is held to the end of the transaction), so sequence
            # numbers, drawn after taking it, increase in commit order: no reader can pass a number that a
            # slower transaction commits later. The price is one append transaction in flight per store.
            await writer.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
            cursor = await writer.execute(
                f"INSERT INTO events ({_EVENT_COLUMNS}) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
                "%s::float8[], %s::float8[], %s::text[], %s::text[], %s::text[]) "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id, seq",
                columns,
            )
            rows = await cursor.fetchall()
        inserted = {row[0] for row in rows}
        last = max((int(row[1]) for row in rows), default=0)
        return [first and e.event_id in inserted for e, first in zip(events, firsts, strict=True)], last

    async def upsert_items(self, items: Sequence[Item]) -> None:
        async with self._writing() as writer, writer.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO items ({ITEM_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (item_id) DO UPDATE "
                f"SET {ITEM_UPDATE}",
                [item_row(i) for i in items],
            )
            await cursor.execute(
                "INSERT INTO settings VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (CATALOG_VERSION_KEY, uuid4_hex()),
            )

    async def upsert_users(self, users: Sequence[tuple[str, tuple[str, ...]]]) -> None:
        rows = [(user_key, user_tokens_text(tokens)) for user_key, tokens in users]
        async with self._writing() as writer, writer.cursor() as cursor:
            # Upserts commit one at a time (the lock is held to the end of the transaction), so numbers drawn
            # after taking it increase in commit order: no reader following users_changed can pass a number
            # that a slower transaction commits later. A lock of their own: appends do not wait for them.
            await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_USERS_LOCK,))
            last = await _claim_users_seqs(writer, len(rows))
            await cursor.executemany(
                "INSERT INTO users (user_key, tokens, seq) VALUES (%s, %s, %s) "
                "ON CONFLICT (user_key) DO UPDATE SET tokens = excluded.tokens, seq = excluded.seq",
                [(user_key, tokens, seq) for seq, (user_key, tokens) in enumerate(rows, start=last + 1)],
            )

    async def _fetch(self, query: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        async with self._read_lock:
            try:
                cursor = await (await self._reader.connect()).execute(query, params)
                return await cursor.fetchall()
            except psycopg.Error as exc:
                raise StoreError(describe(exc)) from exc

    async def items(self) -> list[Item]:
        rows = await self._fetch(f"SELECT {ITEM_COLUMNS} FROM items")
        return [item_from_row(r) for r in rows]

    async def users_changed(self, *, after_seq: int = 0) -> tuple[list[tuple[str, tuple[str, ...]]], int]:
        rows = await self._fetch("SELECT user_key, tokens, seq FROM users WHERE seq > %s ORDER BY seq", (after_seq,))
        changed = [(str(r[0]), tokens_from_text(r[1])) for r in rows]
        return changed, int(rows[-1][2]) if rows else after_seq  # type: ignore[call-overload]

    async def log_impressions(self, impressions: Sequence[Impression]) -> None:
        async with self._writing() as writer, writer.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO impressions ({IMPRESSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [impression_row(i) for i in impressions],
            )

    async def impressions_after(self, after_s: float, *, limit: int = 100_000) -> list[Impression]:
        rows = await self._fetch(
            f"SELECT {IMPRESSION_COLUMNS} FROM impressions WHERE ts > %s ORDER BY ts LIMIT %s", (after_s, limit)
        )
        return [impression_from_row(r) for r in rows]

    async def impression(self, recommendation_id: str) -> Impression | None:
        rows = await self._fetch(
            f"SELECT {IMPRESSION_COLUMNS} FROM impressions WHERE recommendation_id = %s", (recommendation_id,)
        )
        if not rows:
            return None
        r = rows[0]
        return impression_from_row(r)

    async def events(self, *, after_seq: int = 0, batch_size: int = 10_000) -> AsyncIterator[list[tuple[int, Event]]]:
        last = after_seq
        while True:
            rows = await self._fetch(
                f"SELECT seq, {_EVENT_COLUMNS} FROM events WHERE seq > %s ORDER BY seq LIMIT %s", (last, batch_size)
            )
            if not rows:
                return
            yield [(int(r[0]), event_from_row(r[1:])) for r in rows]  # type: ignore[call-overload]
            last = int(rows[-1][0])  # type: ignore[call-overload]

    async def user_events(self, user_key: str, *, before_s: float, limit: int = 10_000) -> list[Event]:
        rows = await self._fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_key = %s AND ts < %s "
            "ORDER BY ts DESC, event_id DESC LIMIT %s",
            (user_key, before_s, limit),
        )
        return [event_from_row(r) for r in reversed(rows)]

    async def engagement(self, start_s: float, end_s: float) -> list[tuple[str, str, int]]:
        rows = await self._fetch(
            "SELECT item_id, event_type, count(*) FROM events WHERE ts >= %s AND ts < %s AND event_type <> 'search' "
            "GROUP BY item_id, event_type",
            (start_s, end_s),
        )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]  # type: ignore[call-overload]

    async def last_seq(self) -> int:
        return int((await self._fetch("SELECT coalesce(max(seq), 0) FROM events"))[0][0])  # type: ignore[call-overload]

    async def count_events(self) -> int:
        return int((await self._fetch("SELECT count(*) FROM events"))[0][0])  # type: ignore[call-overload]

    async def has_event(self, event_id: str) -> bool:
        return bool(await self._fetch("SELECT 1 FROM events WHERE event_id = %s", (event_id,)))

    async def committed_at(self, seqs: Sequence[int]) -> dict[int, float]:
        rows = await self._fetch("SELECT seq, committed_at FROM events WHERE seq = ANY(%s)", (list(seqs),))
        return {int(r[0]): float(r[1]) for r in rows}  # type: ignore[call-overload, arg-type]

    async def _write(self, query: str, params: Sequence[object]) -> None:
        async with self._writing(transaction=False) as writer:
            await writer.execute(query, params)

    async def put_version(self, record: VersionRecord) -> None:
        await self._write(
            "INSERT INTO model_versions VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (version) DO UPDATE "
            "SET state = excluded.state, parent = excluded.parent, first_seq = excluded.first_seq, "
            "last_seq = excluded.last_seq, metrics = excluded.metrics, note = excluded.note, "
            "created_at = excluded.created_at, updated_at = excluded.updated_at",
            version_row(record),
        )

    async def transition_versions(
        self,
        moves: Sequence[tuple[VersionRecord, tuple[str, ...] | None]],
        entries: Sequence[JournalEntry],
        *,
        single: str | None = None,
    ) -> bool:
        try:
            async with self._writing() as writer:
                # Transitions are rare: each takes the registry's table lock first, so replicas' transitions run
                # one after another (no deadlock between row and table locks) and the checks below hold at commit.
                await writer.execute("LOCK TABLE model_versions IN SHARE ROW EXCLUSIVE MODE")
                if single is not None:
                    cursor = await writer.execute("SELECT version FROM model_versions WHERE state = %s", (single,))
                    others = {int(r[0]) for r in await cursor.fetchall()}
                    if others - {record.version for record, _ in moves}:
                        raise _LostRaceError
                for record, expected in sorted(moves, key=lambda m: m[0].version):
                    cursor = await writer.execute(
                        "SELECT state FROM model_versions WHERE version = %s FOR UPDATE", (record.version,)
                    )
                    row = await cursor.fetchone()
                    if (row is not None) if expected is None else (row is None or row[0] not in expected):
                        raise _LostRaceError
                    if row is None:
                        cursor = await writer.execute(
                            f"INSERT INTO model_versions VALUES ({_NINE}) ON CONFLICT (version) DO NOTHING RETURNING 1",
                            version_row(record),
                        )
                        if await cursor.fetchone() is None:
                            raise _LostRaceError
                    else:
                        await writer.execute(
                            "UPDATE model_versions SET state = %s, parent = %s, first_seq = %s, last_seq = %s, "
                            "metrics = %s, note = %s, created_at = %s, updated_at = %s WHERE version = %s",
                            (*version_row(record)[1:], record.version),
                        )
                for entry in entries:
                    await writer.execute(_JOURNAL_INSERT, journal_row(entry))
        except _LostRaceError:
            return False
        return True

    async def append_journal(self, entries: Sequence[JournalEntry]) -> None:
        async with self._writing() as writer, writer.cursor() as cursor:
            await cursor.executemany(_JOURNAL_INSERT, [journal_row(e) for e in entries])

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
        rows = await self._fetch(
            "SELECT * FROM version_journal WHERE seq > %s AND (%s::bigint IS NULL OR version = %s) "
            f"AND (%s::text IS NULL OR kind = %s) ORDER BY seq {order} LIMIT %s",
            (after_seq, version, version, kind, kind, limit),
        )
        return sorted((journal_from_row(r) for r in rows), key=lambda e: e.seq)

    async def versions(self) -> list[VersionRecord]:
        return [version_from_row(r) for r in await self._fetch("SELECT * FROM model_versions ORDER BY version")]

    async def get_setting(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM settings WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    async def put_setting(self, key: str, value: str) -> None:
        await self._write(
            "INSERT INTO settings VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value)
        )

    async def put_setting_if_absent(self, key: str, value: str) -> str:
        async with self._writing(transaction=False) as writer:
            await writer.execute("INSERT INTO settings VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, value))
            cursor = await writer.execute("SELECT value FROM settings WHERE key = %s", (key,))
            row = await cursor.fetchone()
        assert row is not None
        return str(row[0])

    async def merge_session(self, session_key: str, user_key: str, *, at: float) -> tuple[bool, str]:
        async with self._writing() as writer:
            # The append lock: merges are numbered in commit order, so a replica following them never skips one.
            await writer.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
            cursor = await writer.execute(
                "INSERT INTO identities (session_key, user_key, at) VALUES (%s, %s, %s) "
                "ON CONFLICT (session_key) DO NOTHING",
                (session_key, user_key, at),
            )
            added = cursor.rowcount > 0
            cursor = await writer.execute("SELECT user_key FROM identities WHERE session_key = %s", (session_key,))
            row = await cursor.fetchone()
        assert row is not None
        return added, str(row[0])

    async def identities(self, *, after_seq: int = 0) -> list[tuple[int, str, str]]:
        rows = await self._fetch(
            "SELECT seq, session_key, user_key FROM identities WHERE seq > %s ORDER BY seq", (after_seq,)
        )
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]  # type: ignore[call-overload]

    async def key_events(self, user_key: str, *, up_to_seq: int) -> list[tuple[int, Event]]:
        rows = await self._fetch(
            f"SELECT seq, {_EVENT_COLUMNS} FROM events WHERE user_key = %s AND seq <= %s ORDER BY seq",
            (user_key, up_to_seq),
        )
        return [(int(r[0]), event_from_row(r[1:])) for r in rows]  # type: ignore[call-overload]

    async def forget_user(self, user_key: str, *, ticket: str, at: float, actor: str) -> Forgotten:
        # Dead row versions stay in the table files until VACUUM reuses their space; see docs/privacy.md.
        async with self._writing() as writer:
            # The append lock: erasures (and appends) commit one at a time, so erasure numbers increase in
            # commit order too and a replica following them by number never passes one committed late.
            await writer.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
            # The user's own key and every anonymous session merged into it.
            cursor = await writer.execute(
                "DELETE FROM identities WHERE user_key = %s RETURNING session_key", (user_key,)
            )
            keys = [user_key] + [str(r[0]) for r in await cursor.fetchall()]
            cursor = await writer.execute(
                f"DELETE FROM events WHERE user_key = ANY(%s) RETURNING seq, {_EVENT_COLUMNS}", (keys,)
            )
            events = [(int(r[0]), event_from_row(r[1:])) for r in await cursor.fetchall()]  # type: ignore[call-overload]
            cursor = await writer.execute(
                "DELETE FROM impressions WHERE user_key = ANY(%s) RETURNING item_ids", (keys,)
            )
            served = [json.loads(str(ids)) for (ids,) in await cursor.fetchall()]
            cursor = await writer.execute("DELETE FROM users WHERE user_key = %s", (user_key,))
            users_deleted = cursor.rowcount
            cursor = await writer.execute(
                f"INSERT INTO erasures ({_ERASURE_COLUMNS}) VALUES (%s, %s, %s, %s, %s) "
                f"RETURNING seq, {_ERASURE_COLUMNS}",
                (ticket, at, actor, len(events), len(served)),
            )
            row = await cursor.fetchone()
        assert row is not None
        return Forgotten(erasure_from_row(row), events, [i for ids in served for i in ids], users_deleted)

    async def erasures(self, *, after_seq: int = 0, limit: int = 1000) -> list[Erasure]:
        rows = await self._fetch(
            f"SELECT seq, {_ERASURE_COLUMNS} FROM erasures WHERE seq > %s ORDER BY seq LIMIT %s", (after_seq, limit)
        )
        return [erasure_from_row(r) for r in rows]

    async def last_erasure_seq(self) -> int:
        return int((await self._fetch("SELECT coalesce(max(seq), 0) FROM erasures"))[0][0])  # type: ignore[call-overload]

    async def delete_events_before(self, before_s: float, *, limit: int = 100_000) -> int:
        async with self._writing() as writer:
            cursor = await writer.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < %s LIMIT %s)", (before_s, limit)
            )
            deleted = cursor.rowcount
            cursor = await writer.execute(
                "DELETE FROM impressions WHERE recommendation_id IN "
                "(SELECT recommendation_id FROM impressions WHERE ts < %s LIMIT %s)",
                (before_s, limit),
            )
            deleted += cursor.rowcount
        return int(deleted)

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()
