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
