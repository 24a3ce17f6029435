"""The event store: one interface, SQLite (embedded default) and PostgreSQL (scale-out) behind it."""

from __future__ import annotations

from preftrack_gateway.store.base import (
    CATALOG_VERSION_KEY,
    Erasure,
    EventStore,
    Forgotten,
    Impression,
    JournalEntry,
    StoreError,
    VersionRecord,
)


async def open_store(url: str) -> EventStore:
    """Open (and migrate) the store named by ``url``: ``sqlite:///path`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        from preftrack_gateway.store.sqlite import SQLiteStore

        return await SQLiteStore.open(url.removeprefix("sqlite:///"))
    if url.startswith("postgresql://"):
        from preftrack_gateway.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    raise StoreError(f"unsupported store url {url.split(':', 1)[0]!r}: use sqlite:/// or postgresql://")


__all__ = [
    "CATALOG_VERSION_KEY",
    "Erasure",
    "EventStore",
    "Forgotten",
    "Impression",
    "JournalEntry",
    "StoreError",
    "VersionRecord",
    "open_store",
]
