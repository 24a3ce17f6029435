"""PostgreSQL event store (psycopg 3, async): the scale-out backend several gateway replicas can share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import psycopg

from preftrack_gateway.schema import Event, Item
from preftrack_gateway.store.base import (
    EventStore,
    Impression,
    StoreError,
    VersionRecord,
    context_json,
    event_from_row,
    first_occurrences,
    impression_from_row,
    impression_row,
    item_from_row,
    item_row,
    version_from_row,
    version_row,
)

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
    committed_at DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    categories TEXT NOT NULL,
    price DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS impressions (
    recommendation_id TEXT PRIMARY KEY,
    user_key TEXT NOT NULL,
    item_ids TEXT NOT NULL,
    scores TEXT NOT NULL,
    model_version TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL
);
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
"""

_EVENT_COLUMNS = "event_id, user_key, item_id, event_type, value, ts, recommendation_id, context"


class PostgresStore(EventStore):
    """Events, items and impressions in PostgreSQL. Writes use one connection; reads another."""

    def __init__(self, writer: psycopg.AsyncConnection, reader: psycopg.AsyncConnection) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Connect to ``url`` and create the tables if needed."""
        try:
            writer = await psycopg.AsyncConnection.connect(url, autocommit=True)
            reader = await psycopg.AsyncConnection.connect(url, autocommit=True)
            await writer.execute(_SCHEMA)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open PostgreSQL store: {exc}") from exc
        return cls(writer, reader)

    async def append(self, events: Sequence[Event]) -> list[bool]:
        firsts = first_occurrences(events)
        candidates = [e for e, first in zip(events, firsts, strict=True) if first]
        columns: list[list[object]] = [[] for _ in range(8)]
        for e in candidates:
            row = (e.event_id, e.user_id, e.item_id, e.event_type, e.value, e.timestamp_s, e.recommendation_id)
            for column, value in zip(columns, (*row, context_json(e)), strict=True):
                column.append(value)
        try:
            async with self._write_lock, self._writer.transaction():
                cursor = await self._writer.execute(
                    f"INSERT INTO events ({_EVENT_COLUMNS}) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
                    "%s::float8[], %s::float8[], %s::text[], %s::text[]) "
                    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                    columns,
                )
                inserted = {row[0] for row in await cursor.fetchall()}
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc
        return [first and e.event_id in inserted for e, first in zip(events, firsts, strict=True)]

    async def upsert_items(self, items: Sequence[Item]) -> None:
        try:
            async with self._write_lock, self._writer.transaction(), self._writer.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO items (item_id, categories, price) VALUES (%s, %s, %s) ON CONFLICT (item_id) "
                    "DO UPDATE SET categories = excluded.categories, price = excluded.price",
                    [item_row(i) for i in items],
                )
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def _fetch(self, query: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            async with self._read_lock:
                cursor = await self._reader.execute(query, params)
                return await cursor.fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def items(self) -> list[Item]:
        rows = await self._fetch("SELECT item_id, categories, price FROM items")
        return [item_from_row(r) for r in rows]

    async def log_impressions(self, impressions: Sequence[Impression]) -> None:
        try:
            async with self._write_lock, self._writer.transaction(), self._writer.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO impressions VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [impression_row(i) for i in impressions],
                )
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def impressions_after(self, after_s: float, *, limit: int = 100_000) -> list[Impression]:
        rows = await self._fetch("SELECT * FROM impressions WHERE ts > %s ORDER BY ts LIMIT %s", (after_s, limit))
        return [impression_from_row(r) for r in rows]

    async def impression(self, recommendation_id: str) -> Impression | None:
        rows = await self._fetch("SELECT * FROM impressions WHERE recommendation_id = %s", (recommendation_id,))
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

    async def count_events(self) -> int:
        return int((await self._fetch("SELECT count(*) FROM events"))[0][0])  # type: ignore[call-overload]

    async def has_event(self, event_id: str) -> bool:
        return bool(await self._fetch("SELECT 1 FROM events WHERE event_id = %s", (event_id,)))

    async def committed_at(self, seqs: Sequence[int]) -> dict[int, float]:
        rows = await self._fetch("SELECT seq, committed_at FROM events WHERE seq = ANY(%s)", (list(seqs),))
        return {int(r[0]): float(r[1]) for r in rows}  # type: ignore[call-overload, arg-type]

    async def _write(self, query: str, params: Sequence[object]) -> None:
        try:
            async with self._write_lock:
                await self._writer.execute(query, params)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def put_version(self, record: VersionRecord) -> None:
        await self._write(
            "INSERT INTO model_versions VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (version) DO UPDATE "
            "SET state = excluded.state, parent = excluded.parent, first_seq = excluded.first_seq, "
            "last_seq = excluded.last_seq, metrics = excluded.metrics, note = excluded.note, "
            "created_at = excluded.created_at, updated_at = excluded.updated_at",
            version_row(record),
        )

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
        try:
            async with self._write_lock:
                await self._writer.execute(
                    "INSERT INTO settings VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, value)
                )
                cursor = await self._writer.execute("SELECT value FROM settings WHERE key = %s", (key,))
                row = await cursor.fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc
        assert row is not None
        return str(row[0])

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()
