"""Overload: many feedback streams at once, and streams of invalid events, against one gateway process.

Phase 1: ``--streams`` (200) streams send messages of ``--batch`` (200) events as fast as they can for
``--seconds`` (10); a prober checks FeedbackService health every 20 ms meanwhile. Reported: streams
acknowledged, streams refused (and whether each refusal carried a retry hint), other failures, events
acknowledged and whether every acknowledged stream's events are all stored, health latency, the gateway's peak
RSS. Phase 2: ``--invalid-streams`` (8) streams of ``--invalid-events`` (1,000,000) invalid events each (messages
of 10,000): every stream must be answered, and the gateway's peak RSS is reported.

    .venv/bin/python bench/bench_overload.py [--postgres-url postgresql://...]

Exits non-zero when an acknowledged event is missing or a stream of invalid events is not answered.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from preftrack.v1 import feedback_service_pb2 as fb
from preftrack.v1 import feedback_service_pb2_grpc as fb_grpc
from preftrack.v1 import types_pb2 as t
from preftrack_dev.process import GatewayProcess
from preftrack_gateway.store import open_store


def _rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _message(stream: int, index: int, size: int, *, valid: bool = True) -> fb.StreamFeedbackRequest:
    kind = t.EVENT_TYPE_VIEW if valid else t.EVENT_TYPE_UNSPECIFIED
    return fb.StreamFeedbackRequest(
        events=[
            t.Event(
                event_id=f"s{stream}-{index}-{k}",
                user_id=f"u-{(stream * 7919 + k) % 5000}",
                item_id=f"i-{k % 500}",
                type=kind,
            )
            for k in range(size)
        ]
    )


async def _streams(target: str, streams: int, batch: int, seconds: float) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    sent = [0] * streams
    outcome: list[str] = [""] * streams
    hinted = 0
    acknowledged_events = 0
    health_ms: list[float] = []
    done = asyncio.Event()

    async def probe(channel: grpc.aio.Channel) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="preftrack.v1.FeedbackService")
        while not done.is_set():
            started = time.perf_counter()
            try:
                await stub.Check(request, timeout=2)
                health_ms.append(1000 * (time.perf_counter() - started))
            except grpc.aio.AioRpcError:
                health_ms.append(2000.0)
            await asyncio.sleep(0.02)

    async def one(stub: fb_grpc.FeedbackServiceStub, k: int) -> None:
        nonlocal hinted, acknowledged_events

        async def messages():
            index = 0
            while time.monotonic() < deadline:
                yield _message(k, index, batch)
                sent[k] += batch
                index += 1

        try:
            answer = await stub.StreamFeedback(messages(), timeout=seconds + 60)
        except grpc.aio.AioRpcError as exc:
            outcome[k] = exc.code().name
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry-after-ms" in dict(
                exc.trailing_metadata() or ()
            ):
                hinted += 1
            return
        outcome[k] = "OK"
        acknowledged_events += answer.accepted + answer.duplicates

    channels = [grpc.aio.insecure_channel(target) for _ in range(8)]  # several connections, like many clients
    async with grpc.aio.insecure_channel(target) as health_channel:
        prober = asyncio.create_task(probe(health_channel))
        await asyncio.gather(*(one(fb_grpc.FeedbackServiceStub(channels[k % 8]), k) for k in range(streams)))
        done.set()
        await prober
    for channel in channels:
        await channel.close()
    return {
        "outcome": outcome,
        "sent": sent,
        "hinted": hinted,
        "acknowledged_events": acknowledged_events,
        "health_ms": health_ms,
    }


async def _invalid(target: str, streams: int, events: int) -> list[str]:
    per_message = 10_000

    async def one(stub: fb_grpc.FeedbackServiceStub, k: int) -> str:
        def messages():
            for index in range(events // per_message):
                yield _message(1000 + k, index, per_message, valid=False)

        try:
            answer = await stub.StreamFeedback(messages(), timeout=600)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return f"answered ({answer.rejected_count} rejected, {len(answer.rejected)} listed)"

    async with grpc.aio.insecure_channel(target) as channel:
        stub = fb_grpc.FeedbackServiceStub(channel)
        return list(await asyncio.gather(*(one(stub, k) for k in range(streams))))


async def _stored_per_stream(store_url: str, streams: int) -> list[int]:
    store = await open_store(store_url)
    counts = [0] * streams
    try:
        async for batch in store.events():
            for _, event in batch:
                counts[int(event.event_id[1:].split("-", 1)[0])] += 1
    finally:
        await store.close()
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--invalid-streams", type=int, default=8)
    parser.add_argument("--invalid-events", type=int, default=1_000_000)
    parser.add_argument("--postgres-url", default=None, help="use this (empty) database instead of SQLite")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    store_url = args.postgres_url or f"sqlite:///{work / 'events.db'}"
    env = {
        "PREFTRACK_TRITON_URL": "127.0.0.1:1",  # no Triton: feedback does not need one
        "PREFTRACK_STORE_URL": store_url,
        "PREFTRACK_PSEUDONYM_KEY": "bench-overload-pseudonym-key",
    }
    failed = False
    gateway = GatewayProcess(env, work / "gateway.log").start(require_serving=False)
    try:
        base_rss = _rss_mib(gateway.pid, "VmRSS")
        ok: list[int] = []
        lost, p99 = 0, float("nan")
        if args.streams:
            print(
                f"store {store_url.split(':', 1)[0]}; {args.streams} streams x {args.batch} events/message "
                f"for {args.seconds:g} s"
            )
            started = time.monotonic()
            result = asyncio.run(_streams(gateway.target, args.streams, args.batch, args.seconds))
            elapsed = time.monotonic() - started
            outcome: list[str] = result["outcome"]  # type: ignore[assignment]
            sent: list[int] = result["sent"]  # type: ignore[assignment]
            health: list[float] = result["health_ms"]  # type: ignore[assignment]
            peak_streams = _rss_mib(gateway.pid, "VmHWM")
            stored = asyncio.run(_stored_per_stream(store_url, args.streams))
            ok = [k for k in range(args.streams) if outcome[k] == "OK"]
            lost = sum(1 for k in ok if stored[k] < sent[k])
            refused = sum(1 for o in outcome if o == "RESOURCE_EXHAUSTED")
            others = {o: outcome.count(o) for o in set(outcome) - {"OK", "RESOURCE_EXHAUSTED"}}
            p99 = statistics.quantiles(health, n=100)[98] if len(health) > 1 else float("nan")
            print(f"streams acknowledged     {len(ok)}/{args.streams} ({100 * len(ok) / args.streams:.0f}%)")
            print(f"streams refused          {refused} ({result['hinted']} with a retry hint); other failures {others}")
            print(
                f"events acknowledged      {result['acknowledged_events']:,} in {elapsed:.1f} s "
                f"({result['acknowledged_events'] / elapsed:,.0f}/s); sent {sum(sent):,}, stored {sum(stored):,}"
            )
            print(f"acknowledged streams with an event missing: {lost}")
            print(
                f"health p50 {statistics.median(health):.1f} ms, p99 {p99:.1f} ms, max {max(health):.1f} ms "
                f"({len(health)} checks)"
            )
            print(f"gateway RSS {base_rss:.0f} MiB before, peak {peak_streams:.0f} MiB")
            failed |= lost > 0
        if args.invalid_streams:
            print(f"{args.invalid_streams} streams x {args.invalid_events:,} invalid events")
            started = time.monotonic()
            answers = asyncio.run(_invalid(gateway.target, args.invalid_streams, args.invalid_events))
            print(f"answers in {time.monotonic() - started:.1f} s: {answers}")
            print(
                f"gateway RSS now {_rss_mib(gateway.pid, 'VmRSS'):.0f} MiB, "
                f"peak {_rss_mib(gateway.pid, 'VmHWM'):.0f} MiB"
            )
            failed |= not all(a.startswith("answered") for a in answers)
    finally:
        gateway.stop()
    print(f"streams_acknowledged_pct={100 * len(ok) / max(args.streams, 1):.0f} lost={lost} health_p99_ms={p99:.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
