"""Restart time of a gateway over a long event log: folding the whole log vs a snapshot plus the log's tail.

Writes ``--events`` (1,000,000) synthetic events (10,000 users, 2,000 items) into a fresh SQLite store, then
times three starts of a gateway (no Triton needed: the time is until the feedback service serves):
  1. no snapshot: the whole log is folded;
  2. after (1) stopped and wrote its snapshot, with ``--tail`` (10,000) more events committed meanwhile;
  3. the same again (the snapshot of (2)).

    .venv/bin/python bench/bench_restart.py [--events 1000000]

Exits non-zero when a start from a snapshot is not faster than the full rebuild.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from preftrack_dev.process import GatewayProcess
from preftrack_gateway.schema import Event
from preftrack_gateway.store import open_store

TYPES = ["view"] * 6 + ["click"] * 2 + ["add_to_cart", "purchase"]


async def _write(url: str, first: int, count: int, start_s: float) -> None:
    store = await open_store(url)
    rng = random.Random(first)
    try:
        for offset in range(0, count, 20_000):
            n = min(20_000, count - offset)
            await store.append(
                [
                    Event(
                        event_id=f"e{first + offset + k}",
                        user_id=f"user-{rng.randrange(10_000)}",
                        item_id=f"item-{rng.randrange(2_000)}",
                        event_type=rng.choice(TYPES),
                        timestamp_s=start_s + (first + offset + k) * 0.05,
                    )
                    for k in range(n)
                ]
            )
    finally:
        await store.close()


def _start(env: dict[str, str], log: Path) -> tuple[GatewayProcess, float]:
    started = time.perf_counter()
    gateway = GatewayProcess(env, log).start(timeout_s=900, require_serving=False)
    return gateway, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    url = f"sqlite:///{work / 'events.db'}"
    start_s = time.time() - (args.events + 2 * args.tail) * 0.05 - 3600
    asyncio.run(_write(url, 0, args.events, start_s))
    env = {
        "PREFTRACK_TRITON_URL": "127.0.0.1:1",
        "PREFTRACK_STORE_URL": url,
        "PREFTRACK_PSEUDONYM_KEY": "bench-restart-pseudonym-key",
        "PREFTRACK_SNAPSHOT_DIR": str(work / "snapshots"),
        "PREFTRACK_ONLINE_LEARNING": "false",
    }
    times = []
    for run in range(3):
        if run:
            asyncio.run(_write(url, args.events + (run - 1) * args.tail, args.tail, start_s))
        gateway, seconds = _start(env, work / f"gateway-{run}.log")
        stopping = time.perf_counter()
        gateway.stop(timeout_s=600)
        times.append(seconds)
        print(
            f"start {run + 1}: serving after {seconds:.1f} s; stop (writes the snapshot) took "
            f"{time.perf_counter() - stopping:.1f} s",
            flush=True,
        )
    size = (work / "snapshots" / "gateway-state.pickle").stat().st_size / 2**20
    print(
        f"{args.events:,} events: full rebuild {times[0]:.1f} s; from a snapshot + {args.tail:,} events "
        f"{times[1]:.1f} s and {times[2]:.1f} s (snapshot {size:.0f} MiB)"
    )
    print(f"restart_full_s={times[0]:.1f} restart_snapshot_s={max(times[1:]):.1f}")
    return 0 if max(times[1:]) < times[0] else 1


if __name__ == "__main__":
    sys.exit(main())
