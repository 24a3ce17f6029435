"""The event log has no gaps for readers: several processes' worth of concurrent writers on one PostgreSQL, and
a reader that follows ``events(after_seq=...)`` the way the continual trainer and the gateway replicas do must
see every event exactly once, however the writers' transactions interleave."""

from __future__ import annotations

import asyncio

from preftrack_gateway.schema import Event
from preftrack_gateway.store import open_store

WRITERS, BATCHES, BATCH = 8, 60, 25


def _batch(writer: int, n: int) -> list[Event]:
    return [
        Event(event_id=f"w{writer}-{n}-{k}", user_id=f"u{k}", item_id="i", event_type="view", timestamp_s=1.7e9)
        for k in range(BATCH)
    ]


def test_a_follower_sees_every_event_exactly_once_under_concurrent_writers(fresh_postgres_url: str) -> None:
    async def run() -> list[str]:
        writers = [await open_store(fresh_postgres_url) for _ in range(WRITERS)]  # a connection each
        reader = await open_store(fresh_postgres_url)
        seen: list[str] = []
        done = asyncio.Event()

        async def write(k: int) -> None:
            for n in range(BATCHES):
                flags, last = await writers[k].append_logged(_batch(k, n))
                assert all(flags) and last > 0

        async def follow() -> None:
            watermark = 0
            while True:
                finished = done.is_set()
                async for batch in reader.events(after_seq=watermark, batch_size=97):
                    seen.extend(event.event_id for _, event in batch)
                    watermark = batch[-1][0]
                if finished:
                    return
                await asyncio.sleep(0)

        follower = asyncio.create_task(follow())
        await asyncio.gather(*(write(k) for k in range(WRITERS)))
        done.set()
        await follower
        for store in (*writers, reader):
            await store.close()
        return seen

    seen = asyncio.run(run())
    assert len(seen) == len(set(seen)), "an event was read twice"
    assert len(seen) == WRITERS * BATCHES * BATCH, f"{WRITERS * BATCHES * BATCH - len(seen)} events were skipped"


def test_a_replica_folds_the_log_within_its_bounds(tmp_path) -> None:
    """A commit waiting on the follow lock folds the shared log only up to its own events, and the follower
    takes a bounded turn: neither reads an ever-growing tail while commits wait (the log's order is kept)."""
    from preftrack_gateway.config import GatewayConfig
    from preftrack_gateway.service import GatewayCore
    from preftrack_gateway.triton import TritonScorer

    async def run() -> None:
        url = f"sqlite:///{tmp_path / 'events.db'}"
        writer, store = await open_store(url), await open_store(url)
        config = GatewayConfig(store_url=url, pseudonym_key="a-test-key-of-16-chars+")
        core = GatewayCore(config, store, TritonScorer("127.0.0.1:9"))  # never called: nothing is scored here
        try:
            seqs = [(await writer.append_logged(_batch(0, n)))[1] for n in range(600)]  # 15,000 events
            async with core._follow_lock:
                assert await core._follow_log(up_to_seq=seqs[9]) == 10 * BATCH  # a commit: up to its own events
                assert core._folded_seq == seqs[9]
                assert await core._follow_log(max_events=5000) == 5000  # the follower: one bounded turn
                assert await core._follow_log() == 15_000 - 10 * BATCH - 5000  # and the rest, in order
            assert core._folded_seq == seqs[-1] and core.features.events_folded == 15_000
        finally:
            await core.learner.close()
            await writer.close()
            await store.close()

    asyncio.run(run())
