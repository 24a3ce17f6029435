"""The event store contract, run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time

import pytest

from preftrack_gateway.schema import Event, Item, query_terms
from preftrack_gateway.store import Impression, open_store


def _event(n: int, user: str = "k1") -> Event:
    return Event(
        event_id=f"e{n}",
        user_id=user,
        item_id=f"i{n % 7}",
        event_type="view",
        timestamp_s=1.8e9 + n,
        context={"device": "mobile"} if n % 2 else {},
    )


def test_append_is_idempotent_and_reports_duplicates(store_url: str) -> None:
    async def run() -> None:
        store = await open_store(store_url)
        try:
            first = await store.append([_event(1), _event(2), _event(1)])
            assert first == [True, True, False]
            second = await store.append([_event(2), _event(3)])
            assert second == [False, True]
            assert await store.count_events() == 3
            assert await store.has_event("e3") and not await store.has_event("e9")
            batches = [b async for b in store.events(batch_size=2)]
            stored = [event for batch in batches for _, event in batch]
            assert [e.event_id for e in stored] == ["e1", "e2", "e3"]
            assert stored[0] == _event(1)
            seqs = [seq for batch in batches for seq, _ in batch]
            assert [e.event_id for b in [b async for b in store.events(after_seq=seqs[0])] for _, e in b] == [
                "e2",
                "e3",
            ]
        finally:
            await store.close()

    asyncio.run(run())


def test_items_and_impressions_round_trip(store_url: str) -> None:
    async def run() -> None:
        store = await open_store(store_url)
        try:
            await store.upsert_items([Item(item_id="a", categories=("x", "y"), price=2.5)])
            lamp = Item(item_id="b", title="Desk lamp", attributes=(("brand", "Lumo"), ("colour", "red")))
            await store.upsert_items([Item(item_id="a", categories=("z",), price=3.0), lamp])
            assert sorted(await store.items(), key=lambda i: i.item_id) == [
                Item(item_id="a", categories=("z",), price=3.0),
                lamp,
            ]
            impression = Impression(
                recommendation_id="r1",
                user_key="k1",
                item_ids=("a", "b"),
                scores=(0.9, 0.1),
                model_version="1",
                timestamp_s=1.8e9,
            )
            searched = dataclasses.replace(impression, recommendation_id="r2", query_terms=query_terms("red lamp"))
            await store.log_impressions([impression, searched])
            assert await store.impression("r1") == impression
            assert await store.impression("r2") == searched
            assert await store.impressions_after(0.0) == [impression, searched]
            assert await store.impression("nope") is None
            search = Event(
                event_id="s1",
                user_id="k1",
                item_id="",
                event_type="search",
                timestamp_s=1.8e9,
                query_terms=query_terms("red lamp"),
            )
            view = Event(event_id="v1", user_id="k1", item_id="b", event_type="view", timestamp_s=1.8e9 + 5)
            await store.append([view, search])
            assert await store.user_events("k1", before_s=2e9) == [search, view]
            assert await store.user_events("k1", before_s=1.8e9 + 5) == [search]
            assert await store.engagement(0.0, 2e9) == [("b", "view", 1)]
        finally:
            await store.close()

    asyncio.run(run())


def _token(n: int) -> str:
    """An attribute token of the stored shape (32 hex characters)."""
    return f"{n:032x}"


def test_user_tokens_round_trip_and_are_followed_by_sequence_number(store_url: str) -> None:
    async def run() -> None:
        store = await open_store(store_url)
        try:
            assert await store.users() == {}
            assert await store.users_changed() == ([], 0)
            await store.upsert_users([("k1", (_token(1), _token(2))), ("k2", (_token(3),))])
            changed, first = await store.users_changed()
            assert changed == [("k1", (_token(1), _token(2))), ("k2", (_token(3),))] and first > 0
            assert await store.users() == {"k1": (_token(1), _token(2)), "k2": (_token(3),)}
            await store.upsert_users([("k1", (_token(4),)), ("k3", ())])  # replace one, add one with none
            changed, second = await store.users_changed(after_seq=first)
            assert changed == [("k1", (_token(4),)), ("k3", ())] and second > first
            assert await store.users() == {"k1": (_token(4),), "k2": (_token(3),), "k3": ()}
            await store.upsert_users([("k2", ())])  # a user who lost every attribute keeps an (empty) row
            assert (await store.users_changed(after_seq=second))[0] == [("k2", ())]
            assert await store.users() == {"k1": (_token(4),), "k2": (), "k3": ()}
        finally:
            await store.close()

    asyncio.run(run())


def test_users_changed_follows_the_upserts_in_order(store_url: str) -> None:
    async def run() -> None:
        store = await open_store(store_url)
        try:
            assert await store.users_changed() == ([], 0)
            await store.upsert_users([("k1", (_token(1),)), ("k2", (_token(2), _token(3)))])
            await store.upsert_users([("k3", ())])
            everything, first = await store.users_changed(after_seq=0)
            assert everything == [("k1", (_token(1),)), ("k2", (_token(2), _token(3))), ("k3", ())]
            assert first > 0
            assert await store.users_changed(after_seq=first) == ([], first)
            await store.upsert_users([("k1", (_token(4),)), ("k4", (_token(5),))])  # replace one, add one
            changed, second = await store.users_changed(after_seq=first)
            assert changed == [("k1", (_token(4),)), ("k4", (_token(5),))] and second > first
            everything, latest = await store.users_changed()
            assert [key for key, _ in everything] == ["k2", "k3", "k1", "k4"], "a replaced user moves up"
            assert latest == second
            assert dict(everything) == await store.users()
            await store.upsert_users([("k2", ())])
            assert (await store.users_changed(after_seq=second))[0] == [("k2", ())]
        finally:
            await store.close()

    asyncio.run(run())


def test_a_forgotten_users_number_is_not_given_again(store_url: str) -> None:
    """The newest row goes with its user: the next upsert must still be numbered above what readers have seen."""

    async def run() -> None:
        store = await open_store(store_url)
        try:
            await store.upsert_users([("k1", (_token(1),))])
            await store.upsert_users([("k2", (_token(2),))])
            _, seen = await store.users_changed()
            await store.forget_user("k2", ticket="t-1", at=time.time(), actor="test")
            assert await store.users_changed(after_seq=seen) == ([], seen)
            await store.upsert_users([("k3", (_token(3),))])
            changed, latest = await store.users_changed(after_seq=seen)
            assert changed == [("k3", (_token(3),))] and latest > seen
        finally:
            await store.close()

    asyncio.run(run())


def test_users_written_before_numbering_are_numbered_at_open(store_url: str, tmp_path) -> None:
    """A users table from before users_changed (no seq column) gains it; its rows are numbered once, so that a
    reader from 0 gets them and one following from there gets only later writes."""
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            db.execute("CREATE TABLE users (user_key TEXT PRIMARY KEY, tokens TEXT NOT NULL)")
            db.executemany("INSERT INTO users VALUES (?, ?)", [("k1", _token(1)), ("k2", "")])
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as db:
            db.execute("CREATE TABLE users (user_key TEXT PRIMARY KEY, tokens TEXT NOT NULL)")
            db.execute("INSERT INTO users VALUES ('k1', %s), ('k2', '')", (_token(1),))

    async def run() -> None:
        seen = 0
        for opening in range(2):
            store = await open_store(store_url)
            try:
                everything, last = await store.users_changed()
                assert dict(everything) == {"k1": (_token(1),), "k2": ()} | ({"k3": ()} if opening else {})
                assert last > 0 and (opening == 0 or last == seen), "opening again renumbered the rows"
                if opening == 0:
                    await store.upsert_users([("k3", ())])
                    assert await store.users_changed(after_seq=last) == ([("k3", ())], last + 1)
                    seen = last + 1
            finally:
                await store.close()

    asyncio.run(run())


def test_a_reader_following_concurrent_upserts_misses_no_user(fresh_postgres_url: str) -> None:
    """Replicas upserting at once (each its own store, so its own connections) commit their numbers in order: a
    reader that has passed a number never finds a row committed below it later. (PostgreSQL only: one SQLite
    store serves one process.)"""

    async def run() -> None:
        reader = await open_store(fresh_postgres_url)
        writers = [await open_store(fresh_postgres_url) for _ in range(4)]
        expected = {f"w{w}-u{n}": (_token(100 * w + n),) for w in range(4) for n in range(25)}
        seen: dict[str, tuple[str, ...]] = {}
        last = 0

        async def read() -> None:
            nonlocal last
            changed, newest = await reader.users_changed(after_seq=last)
            assert newest >= last
            seen.update(changed)
            last = newest

        async def write(w: int) -> None:
            for n in range(25):
                await writers[w].upsert_users([(f"w{w}-u{n}", expected[f"w{w}-u{n}"])])

        try:
            writing = asyncio.gather(*(write(w) for w in range(4)))
            reads = 0
            while not writing.done():
                await read()
                reads += 1
            await writing
            await read()  # everything is committed now: a user still missing was passed over for good
            assert reads > 1, "the reader did not follow the writes"
            assert sorted(set(expected) - set(seen)) == [], "the reader passed users committed late"
            assert seen == expected
            assert await reader.users() == expected
        finally:
            for store in (reader, *writers):
                await store.close()

    asyncio.run(run())


def test_a_token_that_would_not_read_back_is_refused_before_anything_is_written(store_url: str) -> None:
    async def run() -> None:
        store = await open_store(store_url)
        try:
            for bad in (("a b",), ("",), (_token(1), "c\td")):
                with pytest.raises(ValueError):
                    await store.upsert_users([("k1", (_token(2),)), ("k2", bad)])
            assert await store.users() == {} and await store.users_changed() == ([], 0)
        finally:
            await store.close()

    asyncio.run(run())


def test_forget_user_removes_the_users_tokens_and_keeps_the_others(store_url: str) -> None:
    async def run() -> None:
        store = await open_store(store_url)
        try:
            await store.upsert_users([("k1", (_token(1),)), ("k2", (_token(2), _token(3)))])
            await store.append([_event(1, user="k1"), _event(2, user="k2")])
            forgotten = await store.forget_user("k1", ticket="t-1", at=time.time(), actor="test")
            assert forgotten.users_deleted == 1 and forgotten.erasure.events_deleted == 1
            assert await store.users() == {"k2": (_token(2), _token(3))}
            # Other replicas learn of it from the recorded erasure (they rebuild), not from the users' rows.
            assert [e.ticket for e in await store.erasures()] == ["t-1"]
            again = await store.forget_user("k1", ticket="t-2", at=time.time(), actor="test")
            assert again.users_deleted == 0
            assert await store.users() == {"k2": (_token(2), _token(3))}
        finally:
            await store.close()

    asyncio.run(run())


def test_concurrent_appends_store_each_event_once(store_url: str) -> None:
    async def run() -> None:
        store = await open_store(store_url)
        try:
            batches = [[_event(n) for n in range(start, start + 50)] for start in range(0, 500, 25)]
            results = await asyncio.gather(*(store.append(b) for b in batches))
            assert sum(sum(r) for r in results) == await store.count_events() == 525
        finally:
            await store.close()

    asyncio.run(run())


def test_registry_and_settings_round_trip(store_url: str) -> None:
    from preftrack_gateway.store import VersionRecord

    async def run() -> None:
        store = await open_store(store_url)
        try:
            record = VersionRecord(
                version=2, state="exported", parent=1, first_seq=5, last_seq=90, metrics={"auc": 0.8}
            )
            await store.put_version(record)
            await store.put_version(VersionRecord(version=1, state="serving"))
            assert [v.version for v in await store.versions()] == [1, 2]
            assert await store.version(2) == record
            await store.put_version(VersionRecord(version=2, state="rejected", parent=1, note="worse"))
            assert (await store.version(2)).state == "rejected"
            assert await store.get_setting("watermark") is None
            await store.put_setting("watermark", "17")
            await store.put_setting("watermark", "18")
            assert await store.get_setting("watermark") == "18"
            assert await store.put_setting_if_absent("deployment", "first") == "first"
            assert await store.put_setting_if_absent("deployment", "second") == "first"
            await store.append([_event(1), _event(2)])
            seqs = [seq for batch in [b async for b in store.events()] for seq, _ in batch]
            times = await store.committed_at(seqs)
            assert set(times) == set(seqs) and all(t > 1.7e9 for t in times.values())
        finally:
            await store.close()

    asyncio.run(run())


def test_a_stream_waiting_for_room_is_not_stranded_by_one_that_gave_up(tmp_path) -> None:
    """A waiter woken for room and then cancelled (its stream gone) must hand the room to the next one, even
    with nothing left to commit that would wake it."""
    from preftrack_gateway.ingest import GroupCommitWriter

    async def run() -> None:
        store = await open_store(f"sqlite:///{tmp_path / 'e.db'}")

        async def folded(events, last_seq) -> None:
            return None

        writer = GroupCommitWriter(store, folded, max_batch_events=10, max_pending_events=10)
        writer.submit([_event(k) for k in range(10)])  # the queue is full; the commit loop is not running
        first = asyncio.ensure_future(writer.submit_when_room([_event(100 + k) for k in range(8)]))
        second = asyncio.ensure_future(writer.submit_when_room([_event(200 + k) for k in range(8)]))
        await asyncio.sleep(0.01)
        writer._pending_events = 0  # as after a commit of the queued events
        writer._queue.clear()
        writer._wake_room_waiters()  # room for the first (8 of 10), not for both
        first.cancel()  # its stream gives up before it takes its turn
        await asyncio.sleep(0.01)
        assert second.done(), "the second waiter was left asleep with an empty queue"
        await store.close()

    asyncio.run(run())


def test_a_store_made_by_an_older_version_gains_the_new_columns(tmp_path) -> None:
    """A SQLite store from before search, item text and user attributes (no events.query_terms, items.title /
    attributes, impressions.arm / query_terms, users table) opens, keeps its rows, and takes the new ones; twice
    is harmless."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
                user_key TEXT NOT NULL, item_id TEXT NOT NULL, event_type TEXT NOT NULL, value REAL NOT NULL,
                ts REAL NOT NULL, recommendation_id TEXT, context TEXT, committed_at REAL NOT NULL DEFAULT 0);
            CREATE TABLE items (item_id TEXT PRIMARY KEY, categories TEXT NOT NULL, price REAL NOT NULL);
            CREATE TABLE impressions (recommendation_id TEXT PRIMARY KEY, user_key TEXT NOT NULL,
                item_ids TEXT NOT NULL, scores TEXT NOT NULL, model_version TEXT NOT NULL, ts REAL NOT NULL);
            INSERT INTO events (event_id, user_key, item_id, event_type, value, ts)
                VALUES ('e1', 'k', 'a', 'view', 1, 1.8e9);
            INSERT INTO items VALUES ('a', '["x"]', 2.0);
            INSERT INTO impressions VALUES ('r1', 'k', '["a"]', '[0.5]', '1', 1.8e9);
            """
        )

    async def run() -> None:
        for opening in range(2):
            store = await open_store(f"sqlite:///{path}")
            try:
                assert Item(item_id="a", categories=("x",), price=2.0) in await store.items()
                assert [e.event_id for e in await store.user_events("k", before_s=2e9)] == ["e1"]
                old = await store.impression("r1")
                assert old is not None and old.arm == "stable" and old.query_terms == ()
                await store.upsert_items([Item(item_id="b", title="Desk lamp")])
                assert await store.users() == ({} if opening == 0 else {"k": (_token(1),)})
                await store.upsert_users([("k", (_token(1),))])
                assert await store.users() == {"k": (_token(1),)}
            finally:
                await store.close()

    asyncio.run(run())


def test_processes_opening_a_new_postgres_database_at_once_all_succeed(fresh_postgres_url: str) -> None:
    """A new deployment's gateways and trainer create the tables at the same moment: each waits for the others
    (CREATE ... IF NOT EXISTS run at once can fail on PostgreSQL's catalogue) and none fails to start."""

    async def open_many() -> None:
        stores = await asyncio.gather(*(open_store(fresh_postgres_url) for _ in range(8)))
        for store in stores:
            assert await store.count_events() == 0
            await store.close()

    asyncio.run(open_many())
