"""Overload: many feedback streams at once, and streams of invalid events, against one gateway process.

Phase 1: ``--streams`` (200) streams send messages of ``--batch`` (200) events as fast as they can for
``--seconds`` (10); meanwhile a prober (its own process, so the load generator's event loop does not delay it)
checks FeedbackService health every 20 ms on the health port (``PREFTRACK_HEALTH_PORT``, answered from the
gateway's own threads) and, for comparison, on the main port. Reported: streams acknowledged, streams refused
(and whether each refusal carried a retry hint), other failures, events acknowledged and whether every
acknowledged stream's events are all stored, per port the checks answered within ``--deadline-ms`` (100) and
their p50 / p99, the gateway's peak RSS. Phase 2: ``--invalid-streams`` (8) streams of ``--invalid-events``
(1,000,000) invalid events each (messages of 10,000): every stream must be answered, and the gateway's peak RSS
is reported.

    .venv/bin/python bench/bench_overload.py [--postgres-url postgresql://...]

Exits non-zero when an acknowledged event is missing, a stream of invalid events is not answered, or a check
on the health port is not answered within the deadline or their p99 exceeds 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from preftrack.v1 import feedback_service_pb2 as fb
from preftrack.v1 import feedback_service_pb2_grpc as fb_grpc
from preftrack.v1 import types_pb2 as t
from preftrack_dev.process import GatewayProcess, free_port
from preftrack_gateway.store import open_store

#: The health port's goal under the flood (issue #25): every check answered, p99 at most this.
_HEALTH_P99_GOAL_MS = 100.0
_PROBE_INTERVAL_S = 0.02
_PROBE_TIMEOUT_S = 2.0  # long enough to measure a slow answer; the deadline judges it


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
    await asyncio.gather(*(one(fb_grpc.FeedbackServiceStub(channels[k % 8]), k) for k in range(streams)))
    for channel in channels:
        await channel.close()
    return {"outcome": outcome, "sent": sent, "hinted": hinted, "acknowledged_events": acknowledged_events}


def _probe_ports(
    targets: dict[str, str], ready: EventType, stop: EventType, results: Queue[tuple[str, list[float]]]
) -> None:
    """Check FeedbackService health on each target (one thread each) until ``stop``; put ``(name, latencies in
    ms)`` per target on ``results``, a failed check counted as NaN."""
    out: dict[str, list[float]] = {name: [] for name in targets}

    def probe(name: str) -> None:
        with grpc.insecure_channel(targets[name]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="preftrack.v1.FeedbackService")
            stub.Check(request, timeout=10)  # connected before the flood starts
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    stub.Check(request, timeout=_PROBE_TIMEOUT_S)
                    out[name].append(1000 * (time.perf_counter() - started))
                except grpc.RpcError:
                    out[name].append(float("nan"))
                time.sleep(_PROBE_INTERVAL_S)

    threads = [threading.Thread(target=probe, args=(name,)) for name in targets]
    for thread in threads:
        thread.start()
    ready.set()
    for thread in threads:
        thread.join()
    for name, latencies in out.items():
        results.put((name, latencies))


def _flood_with_probes(
    targets: dict[str, str], streams: int, batch: int, seconds: float
) -> tuple[dict[str, object], dict[str, list[float]]]:
    """The streams (on this process's event loop) while another process probes health on every target."""
    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    prober = context.Process(target=_probe_ports, args=(targets, ready, stop, results))
    prober.start()
    if not ready.wait(60):
        prober.kill()
        raise RuntimeError("the health prober did not start")
    try:
        flood = asyncio.run(_streams(targets["main port"], streams, batch, seconds))
    finally:
        stop.set()
    latencies = dict(results.get(timeout=30) for _ in targets)
    prober.join()
    return flood, latencies


def _health_line(name: str, latencies: list[float], deadline_ms: float) -> tuple[int, float]:
    """Print one port's health figures; returns (checks missed: failed or slower than the deadline, p99 ms)."""
    answered = [ms for ms in latencies if ms == ms]  # NaN: failed
    within = sum(1 for ms in answered if ms <= deadline_ms)
    # A failed check counts as slower than any answer: it is in the tail.
    ordered = sorted(answered) + [float("inf")] * (len(latencies) - len(answered))
    p50 = statistics.median(ordered) if ordered else float("nan")
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98] if len(ordered) > 1 else float("nan")
    print(
        f"health on the {name + ':':<11} {within} of {len(latencies)} checks within {deadline_ms:g} ms, "
        f"{len(latencies) - len(answered)} failed; p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(ordered, default=float('nan')):.1f} ms"
    )
    return len(latencies) - within, p99


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
    parser.add_argument("--deadline-ms", type=float, default=100.0, help="a health check slower than this missed")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    store_url = args.postgres_url or f"sqlite:///{work / 'events.db'}"
    env = {
        "PREFTRACK_TRITON_URL": "127.0.0.1:1",  # no Triton: feedback does not need one
        "PREFTRACK_STORE_URL": store_url,
        "PREFTRACK_PSEUDONYM_KEY": "bench-overload-pseudonym-key",
        "PREFTRACK_HEALTH_PORT": str(free_port()),
    }
    failed = False
    gateway = GatewayProcess(env, work / "gateway.log").start(require_serving=False)
    try:
        base_rss = _rss_mib(gateway.pid, "VmRSS")
        ok: list[int] = []
        lost, p99, port_p99, port_missed = 0, float("nan"), float("nan"), 0
        if args.streams:
            print(
                f"store {store_url.split(':', 1)[0]}; {args.streams} streams x {args.batch} events/message "
                f"for {args.seconds:g} s"
            )
            started = time.monotonic()
            targets = {"main port": gateway.target, "health port": f"127.0.0.1:{env['PREFTRACK_HEALTH_PORT']}"}
            result, health = _flood_with_probes(targets, args.streams, args.batch, args.seconds)
            elapsed = time.monotonic() - started
            outcome: list[str] = result["outcome"]  # type: ignore[assignment]
            sent: list[int] = result["sent"]  # type: ignore[assignment]
            peak_streams = _rss_mib(gateway.pid, "VmHWM")
            stored = asyncio.run(_stored_per_stream(store_url, args.streams))
            ok = [k for k in range(args.streams) if outcome[k] == "OK"]
            lost = sum(1 for k in ok if stored[k] < sent[k])
            refused = sum(1 for o in outcome if o == "RESOURCE_EXHAUSTED")
            others = {o: outcome.count(o) for o in set(outcome) - {"OK", "RESOURCE_EXHAUSTED"}}
            print(f"streams acknowledged     {len(ok)}/{args.streams} ({100 * len(ok) / args.streams:.0f}%)")
            print(f"streams refused          {refused} ({result['hinted']} with a retry hint); other failures {others}")
            print(
                f"events acknowledged      {result['acknowledged_events']:,} in {elapsed:.1f} s "
                f"({result['acknowledged_events'] / elapsed:,.0f}/s); sent {sum(sent):,}, stored {sum(stored):,}"
            )
            print(f"acknowledged streams with an event missing: {lost}")
            _, p99 = _health_line("main port", health["main port"], args.deadline_ms)
            port_missed, port_p99 = _health_line("health port", health["health port"], args.deadline_ms)
            if port_missed or not port_p99 <= _HEALTH_P99_GOAL_MS:
                print(
                    f"FAILED: the health port missed {port_missed} checks (deadline {args.deadline_ms:g} ms), "
                    f"p99 {port_p99:.1f} ms (goal <= {_HEALTH_P99_GOAL_MS:g} ms)",
                    file=sys.stderr,
                )
                failed = True
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
    print(
        f"streams_acknowledged_pct={100 * len(ok) / max(args.streams, 1):.0f} lost={lost} health_p99_ms={p99:.1f} "
        f"health_port_p99_ms={port_p99:.1f} health_port_missed={port_missed}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
